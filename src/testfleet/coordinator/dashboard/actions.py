"""Acting from the dashboard: cancel a task, drain or undrain a worker.

Callers: :func:`testfleet.coordinator.dashboard.add_dashboard` includes the
router; the task and worker pages show the buttons to a token whose role
allows them (a submitter cancels its own tasks, an admin any task and drains
workers), with :func:`csrf_token` in each form.

Cross-site requests: the sign-in cookie is SameSite=Strict, so another site's
form does not carry it; and each form carries a token derived from the
session's secret with a key this process made at start-up (HMAC), which a page
on another site cannot read or compute. A POST without the right one is
refused (400) before anything changes. The changes go through the coordinator
loop and are audited as the REST API's are (``api.py``), with the same role
rules (``auth.tasks_not_theirs``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from testfleet.clock import Clock
from testfleet.coordinator.auth import (
    SESSION_COOKIE,
    Auth,
    Principal,
    require_session,
    tasks_not_theirs,
)
from testfleet.coordinator.dashboard.login import DASHBOARD_PATH, base_path
from testfleet.coordinator.dashboard.templates import Templates
from testfleet.coordinator.events import Refused
from testfleet.coordinator.loop import CoordinatorLoop, CoordinatorUnavailableError
from testfleet.security.audit import AuditKind, AuditOutcome
from testfleet.security.tokens import Role
from testfleet.store.contract import StoreReader

#: The form field that carries the CSRF token.
CSRF_FIELD = "csrf"
#: Forms here hold two short fields.
MAX_FORM_BYTES = 1024


class CsrfKey:
    """The per-process key the forms' tokens are made with (see the module docstring).
    A restart makes a new one: a page opened before it must be reloaded to act."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def token(self, secret: str) -> str:
        return hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()[:40]

    def valid(self, secret: str, given: str) -> bool:
        return hmac.compare_digest(self.token(secret), given)


def session_secret(request: Request) -> str | None:
    """The secret this request authenticated with: the bearer header's, else the cookie's."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.cookies.get(SESSION_COOKIE)


def csrf_token(key: CsrfKey, request: Request) -> str:
    """The token a page puts in its forms for this session ('' when there is none)."""
    secret = session_secret(request)
    return "" if secret is None else key.token(secret)


Submitter = Annotated[Principal, Depends(require_session(Role.SUBMITTER))]
Admin = Annotated[Principal, Depends(require_session(Role.ADMIN))]


def build_actions_router(
    loop: CoordinatorLoop,
    store: StoreReader,
    clock: Clock,
    templates: Templates,
    key: CsrfKey,
) -> APIRouter:
    router = APIRouter(prefix=DASHBOARD_PATH, include_in_schema=False)

    def problem(request: Request, status: int, text: str) -> HTMLResponse:
        page = templates.render(
            "missing.html",
            base=base_path(request),
            now=clock.now(),
            page="error",
            what=None,
            problem=text,
        )
        return HTMLResponse(page, status_code=status)

    async def form_refusal(request: Request) -> HTMLResponse | None:
        """400 unless the form carries this session's CSRF token (and comes from
        this origin, when the browser says where it comes from)."""
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        if origin is not None and origin.split("://", 1)[-1] != host:
            return problem(request, 400, f"origin: a form from {origin[:100]} may not act here")
        body = await request.body()
        fields = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", errors="replace"))
        given = (fields.get(CSRF_FIELD) or [""])[0]
        secret = session_secret(request)
        if secret is None or not given or not key.valid(secret, given):
            return problem(
                request,
                400,
                "csrf: the form's token is missing or stale; reload the page and try again",
            )
        return None

    @router.post("/tasks/{task_id}/cancel")
    async def cancel(request: Request, task_id: str, principal: Submitter) -> Response:
        refused_form = await form_refusal(request)
        if refused_form is not None:
            return refused_form
        auth: Auth = request.app.state.auth
        what = f"POST {DASHBOARD_PATH}/tasks/{task_id}/cancel"
        if await tasks_not_theirs(store, principal, [task_id]):
            await auth.record(
                principal,
                AuditKind.DENIED,
                {"request": what, "task_ids": [task_id], "reason": "not the submitter"},
                AuditOutcome.REFUSED,
            )
            return problem(request, 403, "a submitter may cancel only the tasks it submitted")
        try:
            outcome = await loop.cancel([task_id])
        except CoordinatorUnavailableError as exc:
            return problem(request, 503, str(exc))
        if outcome.not_found:
            return problem(request, 404, f"no task with id {task_id!r}")
        if outcome.already_finished:
            return problem(request, 409, f"task {task_id!r} has already finished")
        await auth.record(principal, AuditKind.TASKS_CANCELLED, {"tasks": 1, "task_ids": [task_id]})
        return RedirectResponse(f"{base_path(request)}/tasks/{task_id}", status_code=303)

    async def drain_change(
        request: Request, worker_id: str, principal: Principal, drain: bool
    ) -> Response:
        refused_form = await form_refusal(request)
        if refused_form is not None:
            return refused_form
        auth: Auth = request.app.state.auth
        try:
            answer = await (loop.drain(worker_id) if drain else loop.undrain(worker_id))
        except CoordinatorUnavailableError as exc:
            return problem(request, 503, str(exc))
        if isinstance(answer, Refused):
            return problem(request, 404, answer.message)
        kind = AuditKind.WORKER_DRAINED if drain else AuditKind.WORKER_UNDRAINED
        await auth.record(principal, kind, {"worker_id": worker_id})
        return RedirectResponse(f"{base_path(request)}/workers/{worker_id}", status_code=303)

    @router.post("/workers/{worker_id}/drain")
    async def drain(request: Request, worker_id: str, principal: Admin) -> Response:
        return await drain_change(request, worker_id, principal, drain=True)

    @router.post("/workers/{worker_id}/undrain")
    async def undrain(request: Request, worker_id: str, principal: Admin) -> Response:
        return await drain_change(request, worker_id, principal, drain=False)

    return router
