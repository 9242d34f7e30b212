"""The dashboard's Test runs and Tests pages.

Callers: :func:`testfleet.coordinator.dashboard.add_dashboard` includes the
router this builds, next to :mod:`.routes` and :mod:`.pages`. Every route
needs a viewer's credential (the sign-in cookie or a bearer header) through
the same ``Viewer`` dependency; none is in the OpenAPI document. Everything
is read from the store in a thread (:mod:`testfleet.store.test_history_queries`)
and shaped by the pure functions of :mod:`.test_runs`.

* ``GET /dashboard/runs?project=``: the newest runs, with progress and failures.
* ``GET /dashboard/runs/{run_id}``: one run. While it runs, its body
  (``GET /dashboard/runs/{run_id}/live``, an htmx fragment) is polled every
  two seconds, as the task page polls its log tail: progress, an ETA,
  chunks per worker. Once it finished the fragment stops polling and lists
  the failing tests, classified (new / failing since / flaky), and the
  slowest. Polling rather than the event stream: the stream carries fleet
  facts every page shows, a run's rows are wanted by one page only.
* ``GET /dashboard/tests?project=&q=``: per test over its recent runs: pass
  rate, flips, passed-on-rerun count, duration p50/p95, a strip of verdicts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from testfleet.clock import Clock
from testfleet.coordinator.dashboard.login import DASHBOARD_PATH, base_path
from testfleet.coordinator.dashboard.routes import BadFilter, Viewer
from testfleet.coordinator.dashboard.templates import Templates
from testfleet.coordinator.dashboard.test_runs import (
    ProblemTest,
    WorkerChunks,
    classify_all,
    eta,
    worker_chunks,
)
from testfleet.store.contract import StoreReader
from testfleet.store.test_history_queries import (
    HISTORY_RUNS,
    ChunkRow,
    RunSummary,
    RunTest,
    TestStats,
)

#: Runs the run list shows (newest first).
RUN_ROWS = 100
#: Chunks of one run read for its page (the first by creation).
CHUNK_ROWS = 500
#: Failing tests classified on a run page; slowest tests listed.
PROBLEM_ROWS = 200
SLOWEST_ROWS = 10
#: Tests the tests page lists (flakiest first).
TEST_ROWS = 300
#: Seconds between two polls of a running run's body.
POLL_SECONDS = 2


@dataclass(frozen=True, slots=True)
class RunView:
    """Everything a run's page body shows (read in one thread)."""

    summary: RunSummary
    chunks: list[ChunkRow]
    workers: list[WorkerChunks]
    eta_seconds: float | None
    problems: list[ProblemTest]
    slowest: list[RunTest]


def read_run(store: StoreReader, run_id: str, now: float) -> RunView | None:
    """The run's view, or None when no test task names it (runs in a thread).
    A running run's failures are counted but classified only once it ends:
    the classification reads the project's history, which a poll every two
    seconds need not repeat."""
    summary = store.run_summary(run_id)
    if summary is None:
        return None
    chunks = store.run_chunks(run_id, CHUNK_ROWS)
    problems: list[ProblemTest] = []
    slowest: list[RunTest] = []
    if not summary.running:
        failing = store.run_problem_tests(run_id, PROBLEM_ROWS)
        earlier = store.earlier_runs(run_id, summary.project)
        verdicts = store.past_verdicts(
            run_id, summary.project, [t.nodeid for t in failing], HISTORY_RUNS
        )
        problems = classify_all(failing, earlier, verdicts)
        slowest = store.run_slowest_tests(run_id, SLOWEST_ROWS)
    return RunView(
        summary=summary,
        chunks=chunks,
        workers=worker_chunks(chunks),
        eta_seconds=eta(summary.total, summary.done, summary.started, now)
        if summary.running
        else None,
        problems=problems,
        slowest=slowest,
    )


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        return None
    if len(value) > 4200 or not value.isprintable():
        raise BadFilter(name, "give at most 4200 printable characters")
    return value.strip()


def read_tests(
    store: StoreReader, project: str | None, contains: str | None
) -> tuple[list[str], str | None, list[TestStats]]:
    """Known projects, the one shown (the asked one, else the most recently
    tested) and its tests' statistics (runs in a thread)."""
    projects = store.tested_projects()
    chosen = project if project is not None else (projects[0] if projects else None)
    if chosen is None:
        return projects, None, []
    stats = store.per_test_stats(chosen, contains=contains, runs=HISTORY_RUNS, limit=TEST_ROWS)
    return projects, chosen, stats


def build_test_pages_router(store: StoreReader, clock: Clock, templates: Templates) -> APIRouter:
    router = APIRouter(prefix=DASHBOARD_PATH, include_in_schema=False)

    def page(request: Request, name: str, status: int = 200, **values: object) -> HTMLResponse:
        html = templates.render(name, base=base_path(request), now=clock.now(), page=name, **values)
        return HTMLResponse(html, status_code=status)

    @router.get("/runs")
    async def runs_page(request: Request, _: Viewer) -> HTMLResponse:
        project = _text(request, "project")
        runs = await asyncio.to_thread(store.recent_runs, project=project, limit=RUN_ROWS)
        return page(request, "runs.html", runs=runs, project=project, limit=RUN_ROWS)

    async def run_view(request: Request, run_id: str, name: str) -> HTMLResponse:
        found = await asyncio.to_thread(read_run, store, run_id, clock.now())
        if found is None:
            return page(request, "missing.html", 404, what=f"test run {run_id!r}")
        return page(request, name, r=found, s=found.summary, poll=POLL_SECONDS)

    @router.get("/runs/{run_id}")
    async def run_page(request: Request, run_id: str, _: Viewer) -> HTMLResponse:
        return await run_view(request, run_id, "run.html")

    @router.get("/runs/{run_id}/live")
    async def run_live(request: Request, run_id: str, _: Viewer) -> HTMLResponse:
        return await run_view(request, run_id, "_run_body.html")

    @router.get("/tests")
    async def tests_page(request: Request, _: Viewer) -> HTMLResponse:
        project, contains = _text(request, "project"), _text(request, "q")
        projects, chosen, stats = await asyncio.to_thread(read_tests, store, project, contains)
        return page(
            request,
            "tests.html",
            projects=projects,
            project=chosen,
            q=contains or "",
            tests=stats,
            runs=HISTORY_RUNS,
            limit=TEST_ROWS,
        )

    return router
