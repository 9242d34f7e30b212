"""``GET /api/v1/tasks/{task_id}/log`` (and ``/log/stream``, the same as
server-sent events): a task's live log tail, then its final log.

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

The stream (for the dashboard) sends the same answers as events, ``id:`` being
each chunk's seq so a browser's reconnect resumes with ``Last-Event-ID``; it
waits on the tails' change event (on the coordinator's clock) rather than
polling, and closes after an ``end`` event once the task has ended.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field

from testfleet.clock import Clock, wait_within
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


async def read_task_log(
    view: StateView, tails: LogTails, store: StoreReader, task_id: str, after: int
) -> TaskLog | None:
    """The answer for ``task_id`` after ``after`` (None: no such task).

    Shared by the REST and SSE routes here and the dashboard's log-tail fragment
    (``dashboard/routes.py``), so a browser and ``testfleet logs`` see the same log."""
    live = view.open_task(task_id)
    if live is not None:
        return _open_task_log(live, tails, after)

    def read() -> tuple[TaskRecord, list[ResultRecord]] | None:
        task = store.get_task(task_id)
        return None if task is None else (task, store.get_results(task_id))

    found = await asyncio.to_thread(read)
    if found is None:
        return None
    task, results = found
    if not task.status.is_terminal:
        # Finished in the state, its commit not yet visible: poll again.
        return _open_task_log(task, tails, after)
    return _finished_task_log(task, results, tails, after)


def build_log_router(
    view: StateView, tails: LogTails, store: StoreReader, clock: Clock
) -> APIRouter:
    """The log routes, bound to one coordinator's live state, tails and store
    (built by the app factory); reading them needs a viewer token."""
    router = APIRouter(
        prefix="/api/v1",
        dependencies=[Depends(require(Role.VIEWER))],
        responses=refusals(UNAUTHENTICATED, FORBIDDEN),
    )

    async def current(task_id: str, after: int) -> TaskLog | None:
        return await read_task_log(view, tails, store, task_id, after)

    @router.get(
        "/tasks/{task_id}/log",
        response_model=TaskLog,
        responses=refusals(TASK_NOT_FOUND, INVALID_PARAMETER, STORAGE_ERROR),
        summary="A task's live log tail (after a seq), then its final log",
    )
    async def task_log(task_id: str, after: AfterQuery = 0) -> TaskLog | JSONResponse:
        answer = await current(task_id, after)
        if answer is None:
            return TASK_NOT_FOUND.response(f"no task with id {task_id!r}")
        return answer

    @router.get(
        "/tasks/{task_id}/log/stream",
        response_class=EventStream,
        responses=refusals(TASK_NOT_FOUND, INVALID_PARAMETER, STORAGE_ERROR),
        summary="The same log as server-sent events, until the task ends",
        description="Events: `log` (`id:` is the chunk's seq, `data:` JSON with `data`, "
        "`attempt_id`), `missed`, `final` (the stored log), then `end` (the task's status), "
        "after which the stream closes. Reconnecting with `Last-Event-ID` resumes.",
    )
    async def task_log_stream(
        task_id: str,
        after: AfterQuery = 0,
        last_event_id: Annotated[
            str | None,
            Header(
                # 18 digits: every seq this coordinator can issue, and within 64 bits.
                pattern=r"^[0-9]{1,18}$",
                description="The last `id:` seen (a chunk's seq): resume after it "
                "(wins over a smaller `after`).",
            ),
        ] = None,
    ) -> Response:
        if last_event_id is not None:
            after = max(after, int(last_event_id))
        first = await current(task_id, after)
        if first is None:
            return TASK_NOT_FOUND.response(f"no task with id {task_id!r}")
        return EventStream(_events(first, lambda seq: current(task_id, seq), tails, clock))

    return router


AfterQuery = Annotated[
    int, Query(ge=0, le=INT64_MAX, description="Only chunks after this seq (for following).")
]
#: How often a stream looks whether its task has ended when no output came,
#: and (every KEEPALIVE_POLLS looks) says so to proxies with a comment line.
STREAM_POLL_SECONDS = 1.0
KEEPALIVE_POLLS = 15


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response (its OpenAPI content type too)."""

    media_type = "text/event-stream"


def _event(kind: str, payload: object, seq: int | None = None) -> str:
    head = f"id: {seq}\n" if seq is not None else ""
    # JSON has no raw newline, so one data line carries any output.
    return f"{head}event: {kind}\ndata: {json.dumps(payload)}\n\n"


async def _events(
    first: TaskLog,
    again: Callable[[int], Awaitable[TaskLog | None]],
    tails: LogTails,
    clock: Clock,
) -> AsyncIterator[str]:
    """The stream of one task's log: each answer's chunks as events, waiting for
    the tails to change (or a poll interval) in between, until the task ends."""
    answer: TaskLog | None = first
    quiet = 0
    while answer is not None:
        changed = tails.changed()  # taken before yielding: no change is missed
        for chunk in answer.chunks:
            yield _event("log", {"data": chunk.data, "attempt_id": answer.attempt_id}, chunk.seq)
        if answer.missed:
            yield _event("missed", {"attempt_id": answer.attempt_id})
        if answer.final_log is not None:
            yield _event("final", {"data": answer.final_log, "attempt_id": answer.attempt_id})
        if answer.finished:
            yield _event("end", {"status": answer.status.value})
            return
        after = answer.next_after
        try:
            await wait_within(clock, changed.wait(), STREAM_POLL_SECONDS)
            quiet = 0
        except TimeoutError:
            quiet += 1
            if quiet % KEEPALIVE_POLLS == 0:
                yield ": keepalive\n\n"
        answer = await again(after)


def _finished_task_log(
    task: TaskRecord, results: list[ResultRecord], tails: LogTails, after: int
) -> TaskLog:
    counted = next((r for r in results if r.counted), None)
    attempt_id = counted.attempt_id if counted is not None else task.current_attempt_id
    tail = tails.read(attempt_id, after) if attempt_id is not None and after > 0 else None
    following = tail is not None and not tail.missed
    final_log = decode_logs(counted.result.logs) if counted is not None else ""
    return TaskLog(
        task_id=task.spec.task_id,
        status=task.status,
        attempt_id=attempt_id,
        worker_id=counted.worker_id if counted is not None else task.worker_id,
        running=False,
        finished=True,
        chunks=_chunks(tail) if following and tail is not None else [],
        next_after=tail.next_after if following and tail is not None else after,
        missed=False,
        final_log=None if following else final_log,
    )


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
