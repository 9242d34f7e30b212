"""The dashboard's pages, their row fragments, the chart history and the event stream.

Callers: :func:`testfleet.coordinator.dashboard.add_dashboard` includes the
router this builds. Every route here needs a viewer's credential, from the
``Authorization`` header or the sign-in cookie (``auth.require_session``); a
browser that has neither is sent to the sign-in form, anything else gets the
API's 401. Live facts come from the state view (copies), history from the
store reader in a thread, as the REST API reads them. None of these routes is
in the OpenAPI document (they answer HTML or an event stream, not the API's
JSON), so the API's fuzzer and clients see only the API.

Bad filter values in a URL get the page again with a 400 that names the
parameter and the values it takes, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from testfleet.clock import Clock
from testfleet.coordinator.api_errors import AuthRefusedError
from testfleet.coordinator.auth import BEARER, SESSION_COOKIE, Principal, require_session
from testfleet.coordinator.dashboard.actions import CsrfKey, csrf_token
from testfleet.coordinator.dashboard.feed import DashboardFeed
from testfleet.coordinator.dashboard.history import chart_history
from testfleet.coordinator.dashboard.login import DASHBOARD_PATH, base_path
from testfleet.coordinator.dashboard.templates import Templates
from testfleet.coordinator.dashboard.views import (
    FleetState,
    TaskFilter,
    WorkerFilter,
    failure_rate,
    overview,
    task_row,
    wait_reason,
    worker_row,
)
from testfleet.coordinator.health import CoordinatorHealth
from testfleet.coordinator.state_view import StateView
from testfleet.domain.enums import ShownStatus, TaskStatus, TaskType
from testfleet.domain.records import TaskRecord
from testfleet.security.tokens import Role
from testfleet.store.contract import StoreReader

#: Rows a task list shows (newest first).
TASK_ROWS = 200
#: Tasks of a run looked up for the run filter.
RUN_TASKS = 500
#: Seconds one event stream lasts before the browser reconnects (with Last-Event-ID).
STREAM_SECONDS = 300.0

E = TypeVar("E", bound=StrEnum)


class LoginRequired(Exception):
    """A browser asked for a page without a usable credential: answered with a
    303 to the sign-in form (see ``add_dashboard``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadFilter(Exception):
    """A filter in a page's URL is not one the page takes: answered 400, naming it."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


_viewer = require_session(Role.VIEWER)


async def viewer_page(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Principal:
    """The viewer check for the dashboard; a browser's page request without one
    goes to the sign-in form instead of a JSON 401."""
    try:
        return await _viewer(request, credentials)
    except AuthRefusedError as refused:
        navigating = "text/html" in request.headers.get("accept", "")
        if request.method == "GET" and navigating and "hx-request" not in request.headers:
            # No credential at all is the usual first visit: the form says enough.
            offered = credentials is not None or SESSION_COOKIE in request.cookies
            raise LoginRequired(refused.message if offered else "") from None
        raise


Viewer = Annotated[Principal, Depends(viewer_page)]


def _enum(request: Request, name: str, kind: type[E]) -> E | None:
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise BadFilter(name, f"{value[:40]!r} is not one of: {allowed}") from None


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        return None
    if len(value) > 200 or not value.isprintable():
        raise BadFilter(name, "give at most 200 printable characters")
    return value.strip()


def _priority(request: Request) -> int | None:
    value = request.query_params.get("priority")
    if not value:
        return None
    if not value.isdigit() or int(value) > 1000:
        raise BadFilter("priority", f"{value[:20]!r} is not a whole number from 0 to 1000")
    return int(value)


def worker_filter(request: Request) -> WorkerFilter:
    return WorkerFilter(
        state=_enum(request, "state", FleetState),
        hardware=_text(request, "hardware"),
        tag=_text(request, "tag"),
        q=_text(request, "q"),
    )


def task_filter(request: Request) -> TaskFilter:
    return TaskFilter(
        status=_enum(request, "status", ShownStatus),
        task_type=_enum(request, "type", TaskType),
        priority=_priority(request),
        worker=_text(request, "worker"),
        run=_text(request, "run"),
    )


def list_filtered_tasks(store: StoreReader, chosen: TaskFilter) -> list[TaskRecord]:
    """The newest :data:`TASK_ROWS` tasks that pass ``chosen`` (runs in a thread).
    Status, type and worker are filtered by the store; priority and run here,
    over the store's newest matches (a run's tasks come from its own list)."""
    if chosen.run is not None:
        tasks = [
            task
            for run_task in store.run_tasks(chosen.run)[:RUN_TASKS]
            if (task := store.get_task(run_task.task_id)) is not None
        ]
    else:
        statuses = None if chosen.status is None else [chosen.status]
        window = TASK_ROWS if chosen.priority is None else TASK_ROWS * 10
        tasks = store.list_tasks(
            statuses=statuses,
            task_type=chosen.task_type,
            worker_id=chosen.worker,
            limit=window,
            newest_first=True,
        )
    kept = [
        task
        for task in tasks
        if (chosen.priority is None or task.spec.priority == chosen.priority)
        and (chosen.task_type is None or task.spec.type is chosen.task_type)
        and (chosen.worker is None or task.worker_id == chosen.worker)
        and (chosen.status is None or _shown_matches(task, chosen.status))
    ]
    return kept[:TASK_ROWS]


def _shown_matches(task: TaskRecord, status: ShownStatus) -> bool:
    if status is ShownStatus.UNSCHEDULABLE:
        return task.status is TaskStatus.QUEUED and task.unschedulable_reason is not None
    return task.status.value == status.value


@dataclass(frozen=True, slots=True)
class DashboardContext:
    """What the routes read: the live view, the store, the clock, the feed."""

    view: StateView
    store: StoreReader
    clock: Clock
    feed: DashboardFeed
    templates: Templates
    started: float
    heartbeat_timeout: float
    loop_events: Callable[[], int]
    csrf: CsrfKey
    #: How many alerts fire now (the overview's link to the alerts page).
    firing_alerts: Callable[[], int]
    #: Recent commit times and event-loop lag (the overview's health cards).
    health: Callable[[], CoordinatorHealth | None] = lambda: None


def build_dashboard_router(ctx: DashboardContext) -> APIRouter:
    router = APIRouter(prefix=DASHBOARD_PATH, include_in_schema=False)
    view, store, templates = ctx.view, ctx.store, ctx.templates

    def page(request: Request, name: str, status: int = 200, **values: object) -> HTMLResponse:
        html = templates.render(
            name, base=base_path(request), now=ctx.clock.now(), page=name, **values
        )
        return HTMLResponse(html, status_code=status)

    @router.get("/")
    async def overview_page(request: Request, _: Viewer) -> HTMLResponse:
        queue = view.queue_depth()
        shown = overview(
            view.workers(),
            view.queue_levels(),
            queue.delayed,
            view.unschedulable_counts(),
            ctx.started,
            firing_alerts=ctx.firing_alerts(),
            health=ctx.health(),
        )
        return page(request, "overview.html", o=shown)

    @router.get("/history")
    async def history(_: Viewer) -> JSONResponse:
        points = await asyncio.to_thread(chart_history, store, ctx.clock.now())
        return JSONResponse({"points": points})

    def worker_rows(request: Request) -> tuple[WorkerFilter, list[object]]:
        chosen = worker_filter(request)
        rows = [
            worker_row(w, ctx.heartbeat_timeout, view.load_history(w.record.worker_id))
            for w in view.workers()
        ]
        return chosen, [row for row in rows if chosen.keeps(row)]

    @router.get("/workers")
    async def workers_page(request: Request, _: Viewer) -> HTMLResponse:
        chosen, rows = worker_rows(request)
        return page(
            request, "workers.html", rows=rows, f=chosen, query=chosen.query(), states=FleetState
        )

    @router.get("/workers/rows")
    async def workers_rows(request: Request, _: Viewer) -> HTMLResponse:
        _chosen, rows = worker_rows(request)
        return page(request, "_worker_rows.html", rows=rows)

    @router.get("/workers/{worker_id}")
    async def worker_page(request: Request, worker_id: str, principal: Viewer) -> HTMLResponse:
        found = view.worker(worker_id)
        if found is None:
            return page(request, "missing.html", 404, what=f"worker {worker_id!r}")
        tasks = await asyncio.to_thread(
            store.list_tasks, worker_id=worker_id, limit=50, newest_first=True
        )
        return page(
            request,
            "worker.html",
            w=worker_row(found, ctx.heartbeat_timeout, view.load_history(worker_id)),
            tasks=[task_row(t) for t in tasks],
            failure_rate=failure_rate(tasks),
            draining=found.draining,
            can_drain=principal.role.includes(Role.ADMIN) and found.connected,
            csrf=csrf_token(ctx.csrf, request),
        )

    @router.get("/tasks")
    async def tasks_page(request: Request, _: Viewer) -> HTMLResponse:
        chosen = task_filter(request)
        tasks = await asyncio.to_thread(list_filtered_tasks, store, chosen)
        return page(
            request,
            "tasks.html",
            rows=[task_row(t) for t in tasks],
            statuses=ShownStatus,
            types=TaskType,
            limit=TASK_ROWS,
            f=chosen,
            query=chosen.query(),
        )

    @router.get("/tasks/rows")
    async def tasks_rows(request: Request, _: Viewer) -> HTMLResponse:
        chosen = task_filter(request)
        tasks = await asyncio.to_thread(list_filtered_tasks, store, chosen)
        return page(request, "_task_rows.html", rows=[task_row(t) for t in tasks])

    @router.get("/tasks/{task_id}")
    async def task_page(request: Request, task_id: str, principal: Viewer) -> HTMLResponse:
        def read() -> tuple[TaskRecord | None, list[object], list[object]]:
            task = store.get_task(task_id)
            if task is None:
                return None, [], []
            return task, list(store.get_attempts(task_id)), list(store.get_results(task_id))

        task, attempts, results = await asyncio.to_thread(read)
        if task is None:
            return page(request, "missing.html", 404, what=f"task {task_id!r}")
        # The live record says more than the store while the task is open
        # (the unschedulable reason is kept in the state, written with the turn).
        live = view.open_task(task_id) or task
        now = ctx.clock.now()
        return page(
            request,
            "task.html",
            t=task_row(live),
            task=live,
            why=wait_reason(live, view.queued_place(task_id), now),
            attempts=attempts,
            results=results,
            # Whether it is theirs to cancel is checked when they do.
            can_cancel=principal.role.includes(Role.SUBMITTER) and not live.status.is_terminal,
            csrf=csrf_token(ctx.csrf, request),
        )

    @router.get("/events")
    async def events(request: Request, _: Viewer) -> Response:
        if "text/event-stream" not in request.headers.get("accept", ""):
            # Plain HTTP clients would wait on it forever; a browser's EventSource
            # always sends this header.
            return page(
                request,
                "missing.html",
                406,
                what="an event stream here (open it with EventSource: Accept: text/event-stream)",
            )
        stream = ctx.feed.stream(request.headers.get("last-event-id"), STREAM_SECONDS)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
