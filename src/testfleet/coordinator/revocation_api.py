"""``POST /api/v1/workers/{worker_id}/revoke``: an admin takes a worker's credentials away.

Callers: ``testfleet workers revoke ID [--reason TEXT]`` (through
:meth:`~testfleet.client.FleetClient.revoke_worker`), with an admin token.

One step, in the order that keeps "durable before acknowledged": the store
records the revocation, revokes every worker and enrol token named by the id
and appends the audit event, in one transaction (``Auth.revoke_worker``);
then the loop applies it (:class:`~testfleet.coordinator.events.RevokeWorker`:
the worker's live socket is closed at once, its open attempts are requeued as
for a lost worker, its status becomes ``revoked``); only then does the route
answer. A coordinator that stops between the two steps reloads the revocation
at start-up. Any valid worker id may be revoked, also one that never
connected (a token handed out for a machine that was then lost).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from testfleet.coordinator.api_errors import (
    FORBIDDEN,
    INVALID_PARAMETER,
    MALFORMED_BODY,
    STORAGE_ERROR,
    UNAUTHENTICATED,
    UNAVAILABLE,
    refusals,
)
from testfleet.coordinator.api_models import ResponseModel
from testfleet.coordinator.api_views import iso
from testfleet.coordinator.auth import AdminToken, Auth
from testfleet.coordinator.loop import CoordinatorLoop, CoordinatorUnavailableError
from testfleet.coordinator.state_view import StateView
from testfleet.domain.enums import WorkerStatus
from testfleet.security.audit import AuditKind
from testfleet.security.tokens import MAX_NAME_LENGTH, NAME_PATTERN
from testfleet.security.worker_revocation import WorkerRevocation

#: How long a revocation's reason may be (it is shown in the audit log).
MAX_REASON_LENGTH = 1000


class RevokeRequest(BaseModel):
    """The optional body of ``POST /workers/{worker_id}/revoke``."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=MAX_REASON_LENGTH)


class WorkerRevoked(ResponseModel):
    """A worker id after ``revoke``."""

    worker_id: str
    revoked_at: str
    reason: str | None
    #: The worker and enrol tokens named by the id that this revoked.
    tokens_revoked: list[str]
    #: The worker's status now; None for an id no worker has connected as.
    status: WorkerStatus | None


def build_revocation_router(loop: CoordinatorLoop, view: StateView, auth: Auth) -> APIRouter:
    """The revoke route over ``loop`` and ``auth``'s store (see the module docstring)."""
    router = APIRouter(prefix="/api/v1", responses=refusals(UNAUTHENTICATED, FORBIDDEN))

    @router.post(
        "/workers/{worker_id}/revoke",
        response_model=WorkerRevoked,
        responses=refusals(MALFORMED_BODY, INVALID_PARAMETER, STORAGE_ERROR, UNAVAILABLE),
        summary="Revoke a worker: close its socket now, refuse its credentials from now on",
        description="Its open attempts are requeued, every worker and enrol token named by "
        "the id is revoked, and a certificate for the id issued before now is refused. A "
        "certificate issued 5 minutes or more after this (`testfleet certs worker` backdates "
        "notBefore by 5 minutes), one from enrolment with a new enrol token (its validity "
        "starts after the revocation), or a new worker token lets it back.",
    )
    async def revoke_worker(
        worker_id: Annotated[str, Path(max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)],
        principal: AdminToken,
        request: RevokeRequest | None = None,
    ) -> WorkerRevoked | JSONResponse:
        reason = None if request is None else request.reason
        revocation = WorkerRevocation(worker_id, auth.clock.now(), principal.name, reason)
        event = auth.event(
            principal, AuditKind.WORKER_REVOKED, {"worker_id": worker_id, "reason": reason}
        )
        tokens = await auth.revoke_worker(revocation, [event])
        try:
            await loop.revoke(worker_id, revocation.revoked_at)
        except CoordinatorUnavailableError as exc:
            return UNAVAILABLE.response(f"{exc}; the revocation is stored and applies at restart")
        worker = view.worker(worker_id)
        return WorkerRevoked(
            worker_id=worker_id,
            revoked_at=iso(revocation.revoked_at) or "",
            reason=reason,
            tokens_revoked=tokens,
            status=None if worker is None else worker.record.status,
        )

    return router
