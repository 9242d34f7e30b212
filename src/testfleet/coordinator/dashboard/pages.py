"""The dashboard's task log tail, alerts page and benchmarks page.

Callers: :func:`testfleet.coordinator.dashboard.add_dashboard` includes the
router this builds, next to :mod:`.routes` (kept apart so neither module
grows past one concept). Every route needs a viewer's credential, the
sign-in cookie or a bearer header, through the same ``Viewer`` dependency as
the other pages; none is in the OpenAPI document.

* ``GET /dashboard/tasks/{id}/log?after=N``: an htmx fragment the task page
  polls every second. It reads the log with the REST route's own
  :func:`~testfleet.coordinator.log_api.read_task_log` (the REST and SSE
  routes take a bearer token, which a page cannot send), appends the new
  chunks to the page's ``<pre>`` out of band, and replaces the poller with one
  that asks after the last seq, or, once the task ended, with the final log
  and no poller. Polling rather than a second event stream: one request a
  second per open task page, and nothing held open per tab.
* ``GET /dashboard/alerts``: firing, pending and resolved alerts and the
  latest notifications, read as ``GET /api/v1/alerts`` reads them.
* ``GET /dashboard/benchmarks``: open and recently resolved benchmark
  regressions, per series the latest figure against its baseline, and per
  configuration the batch-size curve with its optimal batch size.
* ``GET /dashboard/benchmarks/history?model=...&batch_size=...``: one
  series' runs as JSON, which the page's script draws when a series row is
  clicked (JSON rather than points in the page: only the charts asked for
  are read). A missing or bad parameter is a 400 naming it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from testfleet.analysis.regressions import Regression, Sample, find_regressions
from testfleet.clock import Clock
from testfleet.coordinator.alerts.engine import AlertEngine, firing_first
from testfleet.coordinator.dashboard.benchmarks import (
    CURVE_MODELS,
    HISTORY_RUNS,
    BadSelection,
    SeriesSelection,
    batch_curves,
    history_points,
    selection_from,
    series_rows,
    split_regressions,
)
from testfleet.coordinator.dashboard.login import DASHBOARD_PATH, base_path
from testfleet.coordinator.dashboard.routes import BadFilter, Viewer
from testfleet.coordinator.dashboard.templates import Templates
from testfleet.coordinator.log_api import read_task_log
from testfleet.coordinator.log_tails import LogTails
from testfleet.coordinator.state_view import StateView
from testfleet.domain.alerts import AlertRecord, AlertState, NotificationRecord
from testfleet.domain.json_values import INT64_MAX
from testfleet.store.contract import AlertStore, StoreReader

#: Stored alerts and notification results the alerts page lists (newest first).
ALERT_ROWS = 200
NOTIFICATION_ROWS = 50


@dataclass(frozen=True, slots=True)
class PagesContext:
    """What these pages read: the live view and log tails, the store, the alert engine."""

    view: StateView
    tails: LogTails
    store: StoreReader
    alert_store: AlertStore
    alerts: AlertEngine
    clock: Clock
    templates: Templates


def _after(request: Request) -> int:
    value = request.query_params.get("after", "0")
    if not value.isdigit() or len(value) > 19 or int(value) > INT64_MAX:
        raise BadFilter("after", f"{value[:20]!r} is not a whole number from 0 (a log seq)")
    return int(value)


def read_alerts(store: AlertStore) -> tuple[list[AlertRecord], list[NotificationRecord]]:
    """Stored alerts (firing first, then newest) and the latest notifications (a thread)."""
    stored = store.list_alerts(limit=ALERT_ROWS)
    return firing_first(stored), store.alert_notifications(limit=NOTIFICATION_ROWS)


def read_benchmarks(
    store: StoreReader,
) -> tuple[list[Sample], list[Regression], list[dict[str, Any]]]:
    """The store's recent figures, every regression in them, and the latest run
    per batch size of each model's configurations (a thread)."""
    samples = store.regression_samples()
    latest = store.benchmark_latest_per_batch(models=CURVE_MODELS)
    return samples, find_regressions(samples, include_resolved=True), latest


def read_series_history(store: StoreReader, chosen: SeriesSelection) -> list[dict[str, Any]]:
    """The newest runs of one series' model, batch size, precision and hardware (a thread)."""
    return store.benchmark_history(
        chosen.model,
        batch_size=chosen.batch_size,
        precision=chosen.precision,
        hardware=chosen.hardware,
        limit=HISTORY_RUNS,
    )


def build_pages_router(ctx: PagesContext) -> APIRouter:
    router = APIRouter(prefix=DASHBOARD_PATH, include_in_schema=False)

    def page(request: Request, name: str, status: int = 200, **values: object) -> HTMLResponse:
        html = ctx.templates.render(
            name, base=base_path(request), now=ctx.clock.now(), page=name, **values
        )
        return HTMLResponse(html, status_code=status)

    @router.get("/tasks/{task_id}/log")
    async def task_log(request: Request, task_id: str, _: Viewer) -> HTMLResponse:
        after = _after(request)
        log = await read_task_log(ctx.view, ctx.tails, ctx.store, task_id, after)
        if log is None:
            return page(request, "_log_missing.html", 404, task_id=task_id)
        return page(request, "_log_tail.html", log=log, after=after)

    @router.get("/alerts")
    async def alerts_page(request: Request, _: Viewer) -> HTMLResponse:
        stored, notifications = await asyncio.to_thread(read_alerts, ctx.alert_store)
        firing = [a for a in stored if a.state is AlertState.FIRING]
        resolved = [a for a in stored if a.state is not AlertState.FIRING]
        return page(
            request,
            "alerts.html",
            firing=firing,
            pending=ctx.alerts.pending(),
            resolved=resolved,
            notifications=notifications,
            firing_now=ctx.alerts.firing_count(),
        )

    @router.get("/benchmarks")
    async def benchmarks_page(request: Request, _: Viewer) -> HTMLResponse:
        samples, found, latest = await asyncio.to_thread(read_benchmarks, ctx.store)
        open_ones, resolved = split_regressions(found)
        return page(
            request,
            "benchmarks.html",
            open_regressions=open_ones,
            resolved=resolved,
            series=series_rows(samples, found),
            curves=batch_curves(latest),
        )

    @router.get("/benchmarks/history")
    async def benchmark_series_history(request: Request, _: Viewer) -> JSONResponse:
        try:
            chosen = selection_from(request.query_params)
        except BadSelection as bad:
            return JSONResponse(
                {"error": {"code": "bad_parameter", "field": bad.name, "message": str(bad)}},
                status_code=400,
            )
        rows = await asyncio.to_thread(read_series_history, ctx.store, chosen)
        return JSONResponse({"points": history_points(rows, chosen)})

    return router
