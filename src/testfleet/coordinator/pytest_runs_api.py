"""REST routes for pytest runs across the fleet (``/api/v1/test-runs``, ``/api/v1/tests``).

Callers: ``testfleet run`` and ``pytest --fleet`` (``testfleet.fleetrun``)
poll a run while it goes (new test rows by ``seq``, the chunk tasks'
statuses) and read per-test duration history before splitting a suite; people
read the same routes to look at a run afterwards.

Consistency: a run's rows are read before its tasks, and a task's last rows
commit with (or before) its final status, so a client that sees every task
finished and then reads rows after the last ``seq`` it holds has them all.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from testfleet.coordinator.api_errors import (
    FORBIDDEN,
    INVALID_PARAMETER,
    STORAGE_ERROR,
    UNAUTHENTICATED,
    refusals,
)
from testfleet.coordinator.api_models import TestDurations, TestRunView
from testfleet.coordinator.api_views import run_task_view, run_test_view
from testfleet.coordinator.auth import Auth, require
from testfleet.coordinator.state_view import StateView
from testfleet.domain.json_values import INT64_MAX
from testfleet.domain.pytest_tasks import RUN_ID_PATTERN, TestResultRow
from testfleet.security.tokens import Role
from testfleet.store.contract import StoreReader
from testfleet.store.pytest_queries import RunTask

#: The most rows one poll returns; the answer says when there are more.
MAX_ROWS_PER_PAGE = 10_000


def build_test_run_router(view: StateView, store: StoreReader, auth: Auth) -> APIRouter:
    """Routes bound to one coordinator's live state and store (built by the app
    factory); reading them needs a viewer token."""
    router = APIRouter(
        prefix="/api/v1",
        dependencies=[Depends(require(Role.VIEWER))],
        responses=refusals(UNAUTHENTICATED, FORBIDDEN),
    )

    @router.get(
        "/test-runs/{run_id}",
        response_model=TestRunView,
        responses=refusals(INVALID_PARAMETER, STORAGE_ERROR),
        summary="A pytest run: its chunk tasks and recorded tests",
    )
    async def test_run(
        run_id: Annotated[str, Path(pattern=RUN_ID_PATTERN)],
        after_seq: Annotated[
            int,
            Query(
                ge=0, le=INT64_MAX, description="Only tests recorded after this seq (for polling)."
            ),
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_ROWS_PER_PAGE)] = MAX_ROWS_PER_PAGE,
    ) -> TestRunView:
        def read() -> tuple[list[TestResultRow], list[RunTask]]:
            # Rows first, then tasks: see the module docstring.
            rows = store.run_test_rows(run_id, after_seq=after_seq, limit=limit)
            return rows, store.run_tasks(run_id)

        rows, tasks = await asyncio.to_thread(read)
        # An open task's live record is newer than its row (and carries the
        # reason it cannot be placed); finished tasks are only in the store.
        tasks = [
            task if (live := view.open_task(task.task_id)) is None else RunTask.of(live)
            for task in tasks
        ]
        return TestRunView(
            run_id=run_id,
            tasks=[run_task_view(task) for task in tasks],
            tests=[run_test_view(row) for row in rows],
            last_seq=rows[-1].seq if rows else after_seq,
            more=len(rows) == limit,
        )

    @router.get(
        "/tests/durations",
        response_model=TestDurations,
        responses=refusals(INVALID_PARAMETER, STORAGE_ERROR),
        summary="Recent median duration of each test of a project",
    )
    async def test_durations(
        project: Annotated[
            str,
            Query(
                min_length=1,
                max_length=8192,
                description="The project key: 'path:/abs/dir' or 'git:<repo url>'.",
            ),
        ],
    ) -> TestDurations:
        durations = await asyncio.to_thread(store.test_durations, project)
        return TestDurations(project=project, durations=durations)

    return router
