"""The audit trail: what was done or refused, by which credential, from where.

Callers: the coordinator's auth dependency records refused credentials and
roles; the routes that change things record what they changed (submits,
cancels, drains, tokens, worker revocations, enrolments, backups); the worker channel
records refused worker sockets and rejected frames; ``testfleet tokens create
--db`` records the first admin token. The store appends them to
``audit_events`` (never updated, never
deleted) and ``GET /api/v1/audit`` / ``testfleet audit`` read them back.

An event names a credential by its id and name, never by its secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class AuditKind(StrEnum):
    """What happened."""

    AUTH_FAILED = "auth_failed"
    DENIED = "denied"
    TOKEN_CREATED = "token_created"
    TOKEN_REVOKED = "token_revoked"
    TASKS_SUBMITTED = "tasks_submitted"
    TASKS_CANCELLED = "tasks_cancelled"
    WORKER_DRAINED = "worker_drained"
    WORKER_UNDRAINED = "worker_undrained"
    #: A client past its request rate (at most one per key a minute; ``coordinator/limits.py``).
    RATE_LIMITED = "rate_limited"
    #: A submission refused whole: it would take its submitter past ``--max-queued-per-submitter``.
    QUOTA_EXCEEDED = "quota_exceeded"
    #: A worker socket refused at its hello (no or bad credential, another id, revoked).
    WORKER_REFUSED = "worker_refused"
    #: A worker's frame was refused and its socket closed (one per connection).
    WORKER_FRAME_REJECTED = "worker_frame_rejected"
    #: An admin revoked a worker id (``testfleet workers revoke``).
    WORKER_REVOKED = "worker_revoked"
    #: A worker exchanged its enrolment token and a CSR for a certificate.
    WORKER_ENROLLED = "worker_enrolled"
    #: An enrolment was refused after the token's check: a bad CSR, or a token
    #: that another request used first. (A token already used, expired or
    #: unknown when the request came is ``auth_failed``, as on every route.)
    WORKER_ENROL_REFUSED = "worker_enrol_refused"
    #: An admin took a backup through the API (``testfleet backup``); refused
    #: when another was being taken.
    BACKUP_TAKEN = "backup_taken"


class AuditOutcome(StrEnum):
    """Whether it was allowed (and done) or refused."""

    ALLOWED = "allowed"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One row of ``audit_events``."""

    time: float
    kind: AuditKind
    outcome: AuditOutcome
    #: The token's name (None when no valid credential was presented).
    actor: str | None = None
    #: The token's id, never its secret.
    credential_id: str | None = None
    #: The client's address as the coordinator saw it (None when not over HTTP).
    remote: str | None = None
    #: What was asked and why it was refused, e.g. the route, the reason, task ids.
    detail: dict[str, Any] = field(default_factory=dict)
    #: Assigned by the store when read back; 0 for an event not yet stored.
    seq: int = 0
