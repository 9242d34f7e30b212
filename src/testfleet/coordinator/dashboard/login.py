"""The dashboard's sign-in: a form where a person pastes an API token, and the cookie.

Callers: :func:`testfleet.coordinator.dashboard.add_dashboard` adds these
routes; :mod:`.routes` sends a browser here (303) when a page is asked for
without a usable credential.

Why a cookie: a browser sends no ``Authorization`` header when it follows a
link, so the pages take the token's secret from :data:`SESSION_COOKIE`
(``auth.require_session``, the same checks as a bearer token). The cookie is
HttpOnly (no script can read it), SameSite=Strict (no other site's page can
make the browser send it), Secure when the coordinator serves HTTPS, and
scoped to ``/dashboard``, so it is never sent to the REST API, which would
not take it anyway. The token is checked before the cookie is set: a wrong,
expired or revoked token gets the form again with the reason, and the refusal
is audited as for any request.
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from testfleet.coordinator.api_errors import AuthRefusedError
from testfleet.coordinator.auth import SESSION_COOKIE, Auth
from testfleet.coordinator.dashboard.templates import Templates
from testfleet.security.tokens import Role

DASHBOARD_PATH = "/dashboard"
#: A token is about 70 characters; anything far longer is not one.
MAX_FORM_BYTES = 4096


def base_path(request: Request) -> str:
    """Where the dashboard is mounted for this request (a proxy's ``root_path`` kept)."""
    return str(request.scope.get("root_path", "")).rstrip("/") + DASHBOARD_PATH


def safe_next(base: str, target: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another host,
    never ``//host``), else the overview."""
    if (
        target
        and target.startswith(base + "/")
        and not target.startswith("//")
        and "\\" not in target
        and all(ch.isprintable() for ch in target)
    ):
        return target
    return base + "/"


def login_redirect(request: Request, reason: str | None = None) -> RedirectResponse:
    """303 to the sign-in form, remembering the page asked for."""
    base = base_path(request)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = f"{base}/login?next={quote(target, safe='')}"
    if reason:
        url += f"&reason={quote(reason, safe='')}"
    return RedirectResponse(url, status_code=303)


def build_login_router(templates: Templates) -> APIRouter:
    router = APIRouter(prefix=DASHBOARD_PATH, include_in_schema=False)

    def form(request: Request, message: str | None, status: int = 200) -> HTMLResponse:
        base = base_path(request)
        auth: Auth = request.app.state.auth
        page = templates.render(
            "login.html",
            base=base,
            now=auth.clock.now(),
            page="login",
            message=message,
            next=safe_next(base, request.query_params.get("next")),
        )
        return HTMLResponse(page, status_code=status)

    @router.get("/login")
    async def login_page(request: Request) -> HTMLResponse:
        reason = request.query_params.get("reason")
        return form(request, reason[:300] if reason else None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return form(request, "the form is too large: paste one token (tfk_...)", 400)
        fields = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=4)
        secret = (fields.get("token") or [""])[0].strip()
        base = base_path(request)
        target = safe_next(base, (fields.get("next") or [""])[0])
        if not secret:
            return form(request, "token: paste an API token (testfleet tokens create)", 400)
        auth: Auth = request.app.state.auth
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=secret)
        try:
            await auth.check(request, credentials, Role.VIEWER)
        except AuthRefusedError as refused:
            return form(request, f"token: {refused.message}", refused.refusal.status)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            secret,
            path=base,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        base = base_path(request)
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=base, httponly=True, samesite="strict")
        return response

    return router
