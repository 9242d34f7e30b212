"""A worker id revoked by an admin: the row of ``worker_revocations``.

Callers: the revoke route (``coordinator/revocation_api.py``) makes one and
has the store write it, with the worker's tokens revoked and the audit event,
in one transaction before it answers; the coordinator loads the latest
revocation per worker id at start-up (``Store.worker_revocations``), so a
restart keeps refusing what was revoked. From the revocation on, a credential
for that id issued earlier is refused (``coordinator/worker_identity.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerRevocation:
    """One revocation of a worker id (a worker may be revoked more than once)."""

    worker_id: str
    #: Epoch seconds; credentials issued before it are refused.
    revoked_at: float
    #: The admin token's name that revoked it.
    revoked_by: str | None = None
    reason: str | None = None
