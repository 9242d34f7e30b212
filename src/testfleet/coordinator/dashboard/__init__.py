"""The web dashboard the coordinator serves under ``/dashboard/``.

Callers: :func:`testfleet.coordinator.app.create_app` calls
:func:`add_dashboard` once. Server-rendered pages (Jinja2, :mod:`.routes`),
kept current by one event stream (:mod:`.feed`, sampled by :mod:`.live`),
with htmx, its SSE extension and uPlot vendored under ``static/`` (see
``static/README.md``): nothing loads from another host. A person signs in by
pasting a token (:mod:`.login`); cancelling a task and draining a worker
need the matching role and a form token (:mod:`.actions`). The task log
tail, alerts and benchmarks pages are in :mod:`.pages`; the Test runs and
Tests pages in :mod:`.test_pages`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from testfleet.clock import Clock
from testfleet.coordinator.alerts.engine import AlertEngine
from testfleet.coordinator.dashboard.actions import CsrfKey, build_actions_router
from testfleet.coordinator.dashboard.feed import DashboardFeed
from testfleet.coordinator.dashboard.live import LiveSampler
from testfleet.coordinator.dashboard.login import (
    DASHBOARD_PATH,
    base_path,
    build_login_router,
    login_redirect,
)
from testfleet.coordinator.dashboard.pages import PagesContext, build_pages_router
from testfleet.coordinator.dashboard.routes import (
    BadFilter,
    DashboardContext,
    LoginRequired,
    build_dashboard_router,
)
from testfleet.coordinator.dashboard.templates import Templates
from testfleet.coordinator.dashboard.test_pages import build_test_pages_router
from testfleet.coordinator.health import CoordinatorHealth
from testfleet.coordinator.log_tails import LogTails
from testfleet.coordinator.loop import CoordinatorLoop
from testfleet.coordinator.state_view import StateView
from testfleet.store.contract import AlertStore, StoreReader

STATIC_PATH = f"{DASHBOARD_PATH}/static"
#: Package data (pyproject.toml's package-data ships it in wheels and sdists).
STATIC_DIR = Path(__file__).with_name("static")


def add_dashboard(
    app: FastAPI,
    *,
    loop: CoordinatorLoop,
    view: StateView,
    store: StoreReader,
    clock: Clock,
    heartbeat_timeout: float,
    loop_events: Callable[[], int],
    tails: LogTails,
    alerts: AlertEngine,
    alert_store: AlertStore,
    interval: float = 1.0,
    health: Callable[[], CoordinatorHealth | None] = lambda: None,
) -> DashboardFeed:
    """Serve the dashboard on ``app``; its feed (started by the first page that listens).

    The static files (the same in every install, no data of this coordinator)
    are public, as Swagger UI's are; every page needs a viewer's credential.
    """
    templates = Templates()
    started = clock.now()
    sampler = LiveSampler(
        view,
        store,
        clock,
        templates,
        started,
        loop_events,
        firing_alerts=alerts.firing_count,
        health=health,
    )
    feed = DashboardFeed(sampler.sample, clock, interval=interval)
    csrf = CsrfKey()
    ctx = DashboardContext(
        view=view,
        store=store,
        clock=clock,
        feed=feed,
        templates=templates,
        started=started,
        heartbeat_timeout=heartbeat_timeout,
        loop_events=loop_events,
        csrf=csrf,
        firing_alerts=alerts.firing_count,
        health=health,
    )
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.include_router(build_login_router(templates))
    app.include_router(build_dashboard_router(ctx))
    pages = PagesContext(
        view=view,
        tails=tails,
        store=store,
        alert_store=alert_store,
        alerts=alerts,
        clock=clock,
        templates=templates,
    )
    app.include_router(build_pages_router(pages))
    app.include_router(build_test_pages_router(store, clock, templates))
    app.include_router(build_actions_router(loop, store, clock, templates, csrf))

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> RedirectResponse:
        return login_redirect(request, exc.reason)

    @app.exception_handler(BadFilter)
    async def _bad_filter(request: Request, exc: BadFilter) -> HTMLResponse:
        page = templates.render(
            "missing.html",
            base=base_path(request),
            now=clock.now(),
            page="error",
            what=None,
            problem=f"{exc.name}: {exc.problem}; change it in the address or clear the filters",
        )
        return HTMLResponse(page, status_code=400)

    return feed
