"""``GET /api/v1/tasks/{task_id}/log``: a task's live log tail, then its final log.

Callers: ``testfleet logs ID [--follow]`` (through ``FleetClient.task_log``),
the dashboard's task page, scripts. A follower passes back ``next_after`` as
``after`` on its next poll and stops once ``finished`` is true.

What is served:

* While the task is open: the chunks of its current attempt after ``after``
  from the coordinator's in-memory tail (:mod:`~testfleet.coordinator.log_tails`).
* Once it has finished (in the store, so the result is committed): to a
  follower (``after`` > 0) whose attempt's tail is still kept, the chunks it
  has not seen, so it sees the end without repeats; otherwise (a fresh read,
  or the tail is gone) ``final_log``: the log stored with the task's result.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import Field

from testfleet.coordinator.api_errors import (
    FORBIDDEN,
    INVALID_PARAMETER,
    STORAGE_ERROR,
    TASK_NOT_FOUND,
    UNAUTHENTICATED,
    refusals,
)
from testfleet.coordinator.api_models import ResponseModel
from testfleet.coordinator.api_views import iso
from testfleet.coordinator.auth import require
from testfleet.coordinator.log_tails import LogTails, TailRead
from testfleet.coordinator.state_view import StateView
from testfleet.domain.enums import TaskStatus
from testfleet.domain.json_values import INT64_MAX
from testfleet.domain.records import ResultRecord, TaskRecord
from testfleet.domain.result import decode_logs
from testfleet.security.tokens import Role
from testfleet.store.contract import StoreReader


class LogChunkView(ResponseModel):
    """One piece of a running attempt's output."""

    seq: int = Field(description="Its sequence number: pass the last one seen as `after`.")
    data: str
    received_at: str | None = Field(description="When the coordinator received it (UTC).")


class TaskLog(ResponseModel):
    """A task's live log tail after a seq, or its final log once it has finished."""

    task_id: str
    status: TaskStatus
    attempt_id: int | None = Field(description="The attempt the chunks are from.")
    worker_id: str | None
    running: bool = Field(description="An attempt of the task is assigned or running.")
    finished: bool = Field(description="The task has ended: a follower stops here.")
    chunks: list[LogChunkView]
    next_after: int = Field(description="Pass this as `after` on the next poll.")
    missed: bool = Field(
        description="Output since `after` was dropped from the bounded tail before this read."
    )
    final_log: str | None = Field(
        description="The log stored with the task's result: given once the task has "
        "finished, unless the reader is following a tail that still holds its end."
    )


def _chunks(read: TailRead | None) -> list[LogChunkView]:
    if read is None:
        return []
    return [
        LogChunkView(seq=c.seq, data=c.data, received_at=iso(c.received_at)) for c in read.chunks
    ]


def build_log_router(view: StateView, tails: LogTails, store: StoreReader) -> APIRouter:
    """The log routes, bound to one coordinator's live state, tails and store
    (built by the app factory); reading them needs a viewer token."""
    router = APIRouter(
        prefix="/api/v1",
        dependencies=[Depends(require(Role.VIEWER))],
        responses=refusals(UNAUTHENTICATED, FORBIDDEN),
    )

    @router.get(
        "/tasks/{task_id}/log",
        response_model=TaskLog,
        responses=refusals(TASK_NOT_FOUND, INVALID_PARAMETER, STORAGE_ERROR),
        summary="A task's live log tail (after a seq), then its final log",
    )
    async def task_log(
        task_id: str,
        after: Annotated[
            int,
            Query(ge=0, le=INT64_MAX, description="Only chunks after this seq (for following)."),
        ] = 0,
    ) -> TaskLog | JSONResponse:
        live = view.open_task(task_id)
        if live is not None:
            return _open_task_log(live, tails, after)

        def read() -> tuple[TaskRecord, list[ResultRecord]] | None:
            task = store.get_task(task_id)
            return None if task is None else (task, store.get_results(task_id))

        found = await asyncio.to_thread(read)
        if found is None:
            return TASK_NOT_FOUND.response(f"no task with id {task_id!r}")
        task, results = found
        if not task.status.is_terminal:
            # Finished in the state, its commit not yet visible: poll again.
            return _open_task_log(task, tails, after)
        counted = next((r for r in results if r.counted), None)
        attempt_id = counted.attempt_id if counted is not None else task.current_attempt_id
        tail = tails.read(attempt_id, after) if attempt_id is not None and after > 0 else None
        following = tail is not None and not tail.missed
        return TaskLog(
            task_id=task_id,
            status=task.status,
            attempt_id=attempt_id,
            worker_id=counted.worker_id if counted is not None else task.worker_id,
            running=False,
            finished=True,
            chunks=_chunks(tail) if following else [],
            next_after=tail.next_after if tail is not None and following else after,
            missed=False,
            final_log=(
                None
                if following
                else (decode_logs(counted.result.logs) if counted is not None else "")
            ),
        )

    return router


def _open_task_log(task: TaskRecord, tails: LogTails, after: int) -> TaskLog:
    attempt_id = task.current_attempt_id
    tail = tails.read(attempt_id, after) if attempt_id is not None else None
    running = task.status in (TaskStatus.ASSIGNED, TaskStatus.RUNNING)
    return TaskLog(
        task_id=task.spec.task_id,
        status=task.status,
        attempt_id=attempt_id,
        worker_id=task.worker_id,
        running=running,
        finished=False,
        chunks=_chunks(tail),
        next_after=tail.next_after if tail is not None else min(after, tails.last_seq),
        missed=tail.missed if tail is not None else False,
        final_log=None,
    )
