"""Admin routes: API tokens (create, list, revoke) and the audit trail.

Callers: ``testfleet tokens create|list|revoke`` and ``testfleet audit``
(through :class:`~testfleet.client.FleetClient`), with an admin token. The
first admin token cannot come from here (no one could call this yet): it is
written straight into the database file by ``testfleet tokens create --db``.
Writes go through the store's token methods, which commit before the route
answers (see :class:`~testfleet.store.contract.SecurityStore`); a new token's
secret is in the answer once and never stored or shown again.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from testfleet.coordinator.api import IsoMoment, epoch_seconds
from testfleet.coordinator.api_errors import (
    FORBIDDEN,
    INVALID_PARAMETER,
    MALFORMED_BODY,
    STORAGE_ERROR,
    UNAUTHENTICATED,
    ApiRefusal,
    refusals,
)
from testfleet.coordinator.api_models import ErrorCode, FieldProblem, ResponseModel
from testfleet.coordinator.api_views import iso
from testfleet.coordinator.auth import AdminToken, Auth
from testfleet.security.audit import AuditEvent, AuditKind, AuditOutcome
from testfleet.security.enrolment import token_lifetime
from testfleet.security.tokens import (
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    NAME_RULE,
    Role,
    TokenRecord,
    check_name,
    issue_token,
)

TOKEN_NOT_FOUND = ApiRefusal(404, ErrorCode.NOT_FOUND, "No token has this id.")
#: Ten years: far enough for "does not expire soon", near enough to stay a valid time.
MAX_EXPIRY_SECONDS = 10 * 365 * 86400


class TokenRequest(BaseModel):
    """The body of ``POST /api/v1/tokens``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN, description=NAME_RULE
    )
    role: Role
    expires_in_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_EXPIRY_SECONDS,
        description="None: until revoked (an enrol token: 1 hour, and at most 7 days).",
    )

    @field_validator("name")
    @classmethod
    def _name_is_usable(cls, value: str) -> str:
        return check_name(value)


class TokenView(ResponseModel):
    token_id: str
    name: str
    role: Role
    created: str
    expires: str | None
    revoked: str | None


class NewToken(ResponseModel):
    token: TokenView
    secret: str = Field(description="Shown this once; only its hash is stored.")


class TokenList(ResponseModel):
    tokens: list[TokenView]


class AuditView(ResponseModel):
    seq: int
    time: str
    kind: AuditKind
    outcome: AuditOutcome
    actor: str | None
    credential_id: str | None
    remote: str | None
    detail: dict[str, object]


class AuditList(ResponseModel):
    events: list[AuditView]


def token_view(token: TokenRecord) -> TokenView:
    return TokenView(
        token_id=token.token_id,
        name=token.name,
        role=token.role,
        created=iso(token.created) or "",
        expires=iso(token.expires),
        revoked=iso(token.revoked),
    )


def audit_view(event: AuditEvent) -> AuditView:
    return AuditView(
        seq=event.seq,
        time=iso(event.time) or "",
        kind=event.kind,
        outcome=event.outcome,
        actor=event.actor,
        credential_id=event.credential_id,
        remote=event.remote,
        detail=event.detail,
    )


def build_admin_router(auth: Auth) -> APIRouter:
    """Token and audit routes over ``auth``'s store; every one needs an admin token."""
    router = APIRouter(prefix="/api/v1", responses=refusals(UNAUTHENTICATED, FORBIDDEN))
    store = auth.store

    @router.post(
        "/tokens",
        status_code=201,
        response_model=NewToken,
        responses=refusals(MALFORMED_BODY, INVALID_PARAMETER, STORAGE_ERROR),
        summary="Create an API token; its secret is in this answer only",
    )
    async def create_token(request: TokenRequest, principal: AdminToken) -> NewToken | JSONResponse:
        try:
            lifetime = token_lifetime(request.role, request.expires_in_seconds)
        except ValueError as exc:
            field = "body.expires_in_seconds"
            return INVALID_PARAMETER.response(
                f"{field}: {exc}", [FieldProblem(field=field, problem=str(exc), type="too_long")]
            )
        issued = issue_token(
            request.name, request.role, auth.clock.now(), expires_in_seconds=lifetime
        )
        record = issued.record
        event = auth.event(
            principal,
            AuditKind.TOKEN_CREATED,
            {"token_id": record.token_id, "name": record.name, "role": record.role.value},
        )
        await asyncio.to_thread(store.add_token, record, [event])
        return NewToken(token=token_view(record), secret=issued.secret)

    @router.get(
        "/tokens",
        response_model=TokenList,
        responses=refusals(STORAGE_ERROR),
        summary="Every token (never a secret), revoked and expired ones included",
    )
    async def list_tokens(_: AdminToken) -> TokenList:
        tokens = await asyncio.to_thread(store.list_tokens)
        return TokenList(tokens=[token_view(t) for t in tokens])

    @router.post(
        "/tokens/{token_id}/revoke",
        response_model=TokenView,
        responses=refusals(TOKEN_NOT_FOUND, STORAGE_ERROR),
        summary="Revoke a token: refused from the very next request on",
    )
    async def revoke_token(token_id: str, principal: AdminToken) -> TokenView | JSONResponse:
        event = auth.event(principal, AuditKind.TOKEN_REVOKED, {"token_id": token_id})
        token = await auth.revoke(token_id, [event])
        if token is None:
            return TOKEN_NOT_FOUND.response(f"no token with id {token_id!r}")
        return token_view(token)

    @router.get(
        "/audit",
        response_model=AuditList,
        responses=refusals(INVALID_PARAMETER, STORAGE_ERROR),
        summary="The audit trail, newest `limit` events, oldest first",
    )
    async def audit(
        _: AdminToken,
        since: IsoMoment | None = None,
        actor: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    ) -> AuditList:
        events = await asyncio.to_thread(
            store.audit_events, since=epoch_seconds(since), actor=actor, limit=limit
        )
        return AuditList(events=[audit_view(e) for e in events])

    return router
