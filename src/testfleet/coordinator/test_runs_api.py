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
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from testfleet.coordinator.loop import CoordinatorLoop
from testfleet.coordinator.render import iso
from testfleet.domain.json_values import INT64_MAX
from testfleet.domain.testing import RUN_ID_PATTERN, TestResultRow
from testfleet.store import Store
from testfleet.store.test_queries import RunTask

#: The most rows one poll returns; the answer says when there are more.
MAX_ROWS_PER_PAGE = 10_000


def run_task_json(task: RunTask) -> dict[str, Any]:
    """A chunk task without its (long) node id list: what a polling client needs."""
    return {
        "task_id": task.task_id,
        "status": task.status.value,
        "worker_id": task.worker_id,
        "attempts": task.attempts,
        "unschedulable_reason": task.unschedulable_reason,
        "start_time": iso(task.start_time),
        "end_time": iso(task.end_time),
        "error": (
            {"error_class": task.error_class, "message": task.error_message}
            if task.error_class is not None
            else None
        ),
    }


def test_row_json(row: TestResultRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "task_id": row.task_id,
        "nodeid": row.nodeid,
        "attempt_id": row.attempt_id,
        "worker_id": row.worker_id,
        "rerun": row.rerun,
        "outcome": row.outcome.value,
        "duration_seconds": row.duration_seconds,
        "crashed": row.crashed,
        "recorded_time": iso(row.recorded_time),
        "record": row.record.model_dump(mode="json"),
    }


def build_test_run_router(loop: CoordinatorLoop, store: Store) -> APIRouter:
    """Routes bound to one coordinator's loop and store (built by the app factory)."""
    router = APIRouter(prefix="/api/v1")

    @router.get("/test-runs/{run_id}", summary="A pytest run: its chunk tasks and recorded tests")
    async def test_run(
        run_id: Annotated[str, Path(pattern=RUN_ID_PATTERN)],
        after_seq: Annotated[
            int,
            Query(
                ge=0, le=INT64_MAX, description="Only tests recorded after this seq (for polling)."
            ),
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_ROWS_PER_PAGE)] = MAX_ROWS_PER_PAGE,
    ) -> dict[str, Any]:
        def read() -> tuple[list[TestResultRow], list[RunTask]]:
            # Rows first, then tasks: see the module docstring.
            rows = store.run_test_rows(run_id, after_seq=after_seq, limit=limit)
            return rows, store.run_tasks(run_id)

        rows, tasks = await asyncio.to_thread(read)
        # An open task's live record is newer than its row (and carries the
        # reason it cannot be placed); finished tasks are only in the store.
        live = loop.state.tasks
        tasks = [RunTask.of(live[task.task_id]) if task.task_id in live else task for task in tasks]
        return {
            "run_id": run_id,
            "tasks": [run_task_json(task) for task in tasks],
            "tests": [test_row_json(row) for row in rows],
            "last_seq": rows[-1].seq if rows else after_seq,
            "more": len(rows) == limit,
        }

    @router.get("/tests/durations", summary="Recent median duration of each test of a project")
    async def test_durations(
        project: Annotated[
            str,
            Query(
                min_length=1,
                max_length=8192,
                description="The project key: 'path:/abs/dir' or 'git:<repo url>'.",
            ),
        ],
    ) -> dict[str, Any]:
        durations = await asyncio.to_thread(store.test_durations, project)
        return {"project": project, "durations": durations}

    return router
