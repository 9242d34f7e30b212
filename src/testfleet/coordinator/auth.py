"""Who is asking: the bearer-token check every REST route but ``/health`` runs.

Callers: the routers (``api.py``, ``pytest_runs_api.py``, ``query_api.py``,
``admin_api.py``) and the app's own ``/openapi.json`` and ``/docs`` declare
``ViewerToken``, ``SubmitterToken``, ``AdminToken`` or
``Depends(require(Role.X))``; the routes that change things record what they
did with :meth:`Auth.record`. The worker WebSocket has no dependency here:
workers authenticate on their own channel with a certificate or a worker
token (``worker_credentials.py``, which reads the token's row afresh on every
connect); the revoke route revokes a worker's tokens through
:meth:`Auth.revoke_worker`.

Each request's token is checked every time (hash, expiry, revocation). The
token's row is read from the store and then kept in memory for
:data:`TOKEN_ROW_SECONDS` (on the injected clock), then read again. A revoke
through this coordinator (:meth:`Auth.revoke`) drops the kept row before its
answer, so a revoked token is refused here on the very next request. A row
kept here cannot see a revoke made elsewhere: by another coordinator sharing
the same PostgreSQL database (a standby that took over, or one behind the
same load balancer), or in the database by hand. The time it is kept bounds
that: such a revoke takes effect here within :data:`TOKEN_ROW_SECONDS`.
Keeping rows spares a store read (a thread hop and a DuckDB query) per
request, and lets a coordinator whose store has failed still say 503 (loop
stopped) rather than fail on the token check while its rows are fresh. A
refusal is recorded in the audit trail before it is answered (401 for no
usable credential, 403 for the wrong role), with the reason and the client's
address, never the secret.

The dashboard (``coordinator/dashboard/``) is the one place that also takes
the secret from a cookie (:data:`SESSION_COOKIE`, set by its login form): a
browser cannot send a bearer header when it navigates. :func:`require_session`
reads the header first and the cookie otherwise, and checks the secret exactly
as a bearer token (hash, expiry, revocation, role, audit). Only the
dashboard's routes declare it, so a cookie never authenticates the REST API
(which is what keeps a cross-site form from using it there).

Where ``/docs`` and ``/openapi.json`` fall: viewer, like every other read. The
Swagger UI files under ``/docs/assets`` stay public, and so do the
dashboard's under ``/dashboard/static`` and its sign-in form: they are the
same JavaScript and CSS in every install and carry no data of this coordinator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from testfleet.clock import Clock
from testfleet.coordinator.api_errors import FORBIDDEN, UNAUTHENTICATED, AuthRefusedError
from testfleet.coordinator.api_models import RefusedIds
from testfleet.security.audit import AuditEvent, AuditKind, AuditOutcome
from testfleet.security.enrolment import TokenConsumption
from testfleet.security.tokens import Role, TokenCheck, TokenRecord, token_id_of
from testfleet.security.worker_revocation import WorkerRevocation
from testfleet.store.contract import SecurityStore, StoreReader

#: Declares the scheme in the OpenAPI document (``components.securitySchemes``)
#: and reads the header; ``auto_error=False`` so that the refusal is ours (the
#: API's error shape, audited) rather than FastAPI's.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearerToken",
    description="An API token (`testfleet tokens create`), sent as "
    "`Authorization: Bearer tfk_...`.",
)

_REASONS = {
    TokenCheck.MISSING: "no Authorization: Bearer header; pass --token or set TESTFLEET_TOKEN",
    TokenCheck.MALFORMED: "the bearer token is not a testfleet token (tfk_...)",
    TokenCheck.UNKNOWN: "the bearer token is not known to this coordinator",
    TokenCheck.WRONG_SECRET: "the bearer token is not known to this coordinator",
    TokenCheck.EXPIRED: "the bearer token has expired; ask an admin for a new one",
    TokenCheck.REVOKED: "the bearer token was revoked; ask an admin for a new one",
}
#: Where an enrolment token is refused, it was most likely used before (a used
#: one is marked revoked, see ``security/enrolment.py``).
_ENROL_REASONS = {
    TokenCheck.REVOKED: "enrolment token already used (or revoked); ask an admin for a new "
    "one: testfleet tokens create --role enrol --name WORKER_ID",
}


#: How long a token row read from the store is trusted before it is read again:
#: the bound on how late a revoke made outside this coordinator takes effect
#: here (see the module docstring). Short next to a token's life, long next to
#: the gap between a busy client's requests.
TOKEN_ROW_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class _KeptRow:
    """A token row and when (on the injected clock) it was read from the store."""

    record: TokenRecord
    read_at: float


@dataclass(frozen=True, slots=True)
class Principal:
    """The token a request came with, once checked."""

    token_id: str
    name: str
    role: Role
    remote: str | None


def remote_of(request: Request) -> str | None:
    client = request.client
    return None if client is None else f"{client.host}:{client.port}"


class Auth:
    """The token check and the audit trail, bound to one coordinator's store and clock."""

    def __init__(
        self, store: SecurityStore, clock: Clock, *, row_seconds: float = TOKEN_ROW_SECONDS
    ) -> None:
        """``row_seconds``: how long a token row read from the store is kept
        (:data:`TOKEN_ROW_SECONDS`; the app passes the default, tests a shorter one)."""
        self.store = store
        self.clock = clock
        self.row_seconds = row_seconds
        #: Token rows read in the last ``row_seconds``, by id (see the module docstring).
        self._known: dict[str, _KeptRow] = {}
        #: Counts revocations: a row read before one started is not kept.
        self._revocations = 0

    async def _token(self, token_id: str) -> TokenRecord | None:
        now = self.clock.now()
        known = self._known.get(token_id)
        if known is not None and now - known.read_at < self.row_seconds:
            return known.record
        revocations = self._revocations
        record = await asyncio.to_thread(self.store.get_token, token_id)
        # A revoke that began while this read ran may have changed the row after it.
        if record is not None and record.revoked is None and revocations == self._revocations:
            self._known[token_id] = _KeptRow(record, now)
        else:
            # Revoked elsewhere (or gone): forget the stale row at once.
            self._known.pop(token_id, None)
        return record

    def knows(self, token_id: str) -> bool:
        """Whether ``token_id`` names a token whose row is kept here (read and not
        revoked, possibly due to be read again). No store read: the rate limiter
        asks it for every request to decide whether the request counts against
        its token or its address."""
        return token_id in self._known

    async def revoke(self, token_id: str, events: Sequence[AuditEvent]) -> TokenRecord | None:
        """Revoke ``token_id`` (durably, with ``events``) and forget its kept row;
        the token as it now is, or None if there is no such token."""
        self._revocations += 1
        self._known.pop(token_id, None)
        found = await asyncio.to_thread(self.store.revoke_token, token_id, self.clock.now(), events)
        self._known.pop(token_id, None)
        return await asyncio.to_thread(self.store.get_token, token_id) if found else None

    async def revoke_worker(
        self, revocation: WorkerRevocation, events: Sequence[AuditEvent]
    ) -> list[str]:
        """Store ``revocation`` with ``events`` (the store also revokes the worker's
        worker and enrol tokens) and forget their kept rows, as :meth:`revoke`
        does; the ids of the tokens revoked."""
        self._revocations += 1
        named = [
            token_id
            for token_id, kept in self._known.items()
            if kept.record.role.binds_worker and kept.record.name == revocation.worker_id
        ]
        for token_id in named:
            self._known.pop(token_id, None)
        revoked = await asyncio.to_thread(self.store.revoke_worker, revocation, events)
        for token_id in revoked:
            self._known.pop(token_id, None)
        return revoked

    async def consume(
        self, token_id: str, role: Role, events: Sequence[AuditEvent]
    ) -> TokenConsumption:
        """Use the one-time ``role`` token ``token_id`` now (the enrol route): checked
        and marked used in one store transaction, with ``events`` if it was
        usable; its kept row is forgotten, as by :meth:`revoke`."""
        self._revocations += 1
        self._known.pop(token_id, None)
        verdict = await asyncio.to_thread(
            self.store.consume_token, token_id, role, self.clock.now(), events
        )
        self._known.pop(token_id, None)
        return verdict

    async def identify(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None
    ) -> tuple[Principal | None, TokenCheck, str | None]:
        """Who the request's token names, or why none: (principal, verdict, token id)."""
        if credentials is None:
            header = request.headers.get("authorization")
            return None, TokenCheck.MISSING if header is None else TokenCheck.MALFORMED, None
        secret = credentials.credentials
        token_id = token_id_of(secret)
        if token_id is None:
            return None, TokenCheck.MALFORMED, None
        record = await self._token(token_id)
        if record is None:
            return None, TokenCheck.UNKNOWN, token_id
        verdict = record.check(secret, self.clock.now())
        if verdict is not TokenCheck.VALID:
            return None, verdict, token_id
        return Principal(token_id, record.name, record.role, remote_of(request)), verdict, token_id

    async def check(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None, role: Role
    ) -> Principal:
        """The request's :class:`Principal` if its token is valid and its role
        includes ``role``; else an audited 401 or 403 (:class:`AuthRefusedError`)."""
        principal, verdict, token_id = await self.identify(request, credentials)
        what = f"{request.method} {request.url.path}"
        if principal is None:
            await self.record_events(
                [
                    AuditEvent(
                        time=self.clock.now(),
                        kind=AuditKind.AUTH_FAILED,
                        outcome=AuditOutcome.REFUSED,
                        credential_id=token_id,
                        remote=remote_of(request),
                        detail={"reason": verdict.value, "request": what},
                    )
                ]
            )
            reasons = _ENROL_REASONS if role is Role.ENROL else {}
            raise AuthRefusedError(UNAUTHENTICATED, reasons.get(verdict, _REASONS[verdict]))
        if not principal.role.includes(role):
            await self.record(
                principal,
                AuditKind.DENIED,
                {"request": what, "role": principal.role.value, "needs": role.value},
                AuditOutcome.REFUSED,
            )
            raise AuthRefusedError(
                FORBIDDEN,
                f"token {principal.name!r} has role {principal.role.value}; "
                f"{what} needs {role.value}",
            )
        return principal

    async def record(
        self,
        principal: Principal,
        kind: AuditKind,
        detail: dict[str, Any],
        outcome: AuditOutcome = AuditOutcome.ALLOWED,
    ) -> None:
        """Append one event about ``principal`` to the audit trail (durable on return)."""
        await self.record_events([self.event(principal, kind, detail, outcome)])

    def event(
        self,
        principal: Principal,
        kind: AuditKind,
        detail: dict[str, Any],
        outcome: AuditOutcome = AuditOutcome.ALLOWED,
    ) -> AuditEvent:
        return AuditEvent(
            time=self.clock.now(),
            kind=kind,
            outcome=outcome,
            actor=principal.name,
            credential_id=principal.token_id,
            remote=principal.remote,
            detail=detail,
        )

    async def record_events(self, events: Sequence[AuditEvent]) -> None:
        await asyncio.to_thread(self.store.record_audit, events)


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the request's :class:`Principal`, checked by the app's
    :class:`Auth` (``app.state.auth``) for ``role``. Module-level, so that routes
    can name it in their annotations (:data:`ViewerToken` and the others)."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> Principal:
        auth: Auth = request.app.state.auth
        return await auth.check(request, credentials, role)

    return dependency


#: The cookie the dashboard's login form sets (HttpOnly, SameSite=Strict); it
#: holds the token's secret, checked on every request like a bearer header.
SESSION_COOKIE = "testfleet_session"


def require_session(role: Role) -> Callable[..., Awaitable[Principal]]:
    """Like :func:`require`, for the dashboard's routes only: the secret comes from
    the ``Authorization`` header if there is one, else from :data:`SESSION_COOKIE`."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> Principal:
        auth: Auth = request.app.state.auth
        if credentials is None and "authorization" not in request.headers:
            cookie = request.cookies.get(SESSION_COOKIE)
            if cookie:
                credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=cookie)
        return await auth.check(request, credentials, role)

    return dependency


#: Route parameters that require a token of at least that role.
ViewerToken = Annotated[Principal, Depends(require(Role.VIEWER))]
SubmitterToken = Annotated[Principal, Depends(require(Role.SUBMITTER))]
AdminToken = Annotated[Principal, Depends(require(Role.ADMIN))]


async def tasks_not_theirs(
    store: StoreReader, principal: Principal, task_ids: Sequence[str]
) -> list[str]:
    """Which of ``task_ids`` ``principal`` may not cancel: a submitter only its own
    tasks (``submitted_by``), an admin any. Unknown ids are left to the loop (not found)."""
    if principal.role is Role.ADMIN:
        return []

    def others() -> list[str]:
        refused = []
        for task_id in dict.fromkeys(task_ids):
            task = store.get_task(task_id)
            if task is not None and task.submitted_by != principal.token_id:
                refused.append(task_id)
        return refused

    return await asyncio.to_thread(others)


async def refuse_others(
    auth: Auth, principal: Principal, refused: list[str], what: str
) -> JSONResponse:
    """The audited 403 for a submitter that named another's tasks (all refused)."""
    await auth.record(
        principal,
        AuditKind.DENIED,
        {"request": what, "task_ids": refused[:100], "reason": "not the submitter"},
        AuditOutcome.REFUSED,
    )
    return FORBIDDEN.response(
        f"token {principal.name!r} (submitter) may cancel only the tasks it submitted; "
        f"{len(refused)} named here are another's",
        [RefusedIds(ids=refused)],
    )
