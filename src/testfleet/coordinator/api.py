"""The REST API under ``/api/v1``: submit, list, inspect and cancel tasks; list and
drain workers; compare benchmark results across hardware and over time; stats
and health.

Callers: the ``testfleet`` CLI, the pytest plugin, scripts. Reads come from the
committed store (so what the API shows is durable); changes go through the
coordinator loop as events. Every error is ``{"error": {"code", "message",
"details"}}`` with a 4xx status that says what was wrong and which field.
Each route declares what it returns (``response_model``, from
:mod:`~testfleet.coordinator.api_models`) and the errors it can send
(``refusals``, from :mod:`~testfleet.coordinator.api_errors`, which says how).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

import testfleet
from testfleet.coordinator.api_errors import (
    ALREADY_FINISHED,
    DUPLICATE_TASK_ID,
    FORBIDDEN,
    INVALID_PARAMETER,
    INVALID_TASK,
    MALFORMED_BODY,
    QUOTA_EXCEEDED,
    STORAGE_ERROR,
    TASK_NOT_FOUND,
    TOO_MANY_TASKS,
    UNAUTHENTICATED,
    UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
    WORKER_NOT_FOUND,
    refusals,
)
from testfleet.coordinator.api_errors import error_response as error_response  # re-export
from testfleet.coordinator.api_models import (
    BenchmarkComparison,
    BenchmarkHistory,
    BenchmarkModels,
    CancelAnswer,
    CompareFilters,
    CompareRow,
    Health,
    HealthStatus,
    HistoryFilters,
    HistoryRow,
    Liveness,
    LiveStatus,
    LoopCounters,
    QueueCounts,
    Recovery,
    RefusedIds,
    SlotCounts,
    Stats,
    SubmitAnswer,
    TaskCancelled,
    TaskDetail,
    TaskList,
    UnschedulableCount,
    WorkerDrainState,
    WorkerList,
)
from testfleet.coordinator.api_models import ErrorCode as ErrorCode  # re-export
from testfleet.coordinator.api_views import (
    attempt_view,
    benchmark_row,
    iso,
    result_view,
    task_view,
    worker_view,
)
from testfleet.coordinator.auth import (
    BEARER,
    AdminToken,
    Auth,
    Principal,
    SubmitterToken,
    ViewerToken,
    refuse_others,
    tasks_not_theirs,
)
from testfleet.coordinator.events import Accepted, RefusalReason, Refused
from testfleet.coordinator.leadership import CoordinatorRole
from testfleet.coordinator.loop import CoordinatorLoop, CoordinatorUnavailableError
from testfleet.coordinator.state_view import StateView
from testfleet.coordinator.task_body import SUBMIT_OPENAPI, parse_task_body
from testfleet.domain.benchmark import Precision
from testfleet.domain.enums import HardwareKind, ShownStatus, TaskStatus, TaskType
from testfleet.domain.json_values import INT64_MAX
from testfleet.security.audit import AuditKind, AuditOutcome
from testfleet.security.tokens import Role
from testfleet.store.contract import StoreReader


class CancelRequest(BaseModel):
    """The body of ``POST /tasks/cancel``."""

    model_config = ConfigDict(extra="forbid")

    task_ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=10_000, description="The tasks to cancel, all at once."
    )


#: The loop refuses a submission for its ids, and a drain or undrain for its worker.
_REFUSALS = {
    RefusalReason.DUPLICATE_TASK_ID: DUPLICATE_TASK_ID,
    RefusalReason.NOT_FOUND: WORKER_NOT_FOUND,
    RefusalReason.QUOTA_EXCEEDED: QUOTA_EXCEEDED,
}


def refusal_response(refused: Refused) -> JSONResponse:
    details = [RefusedIds(ids=refused.ids)] if refused.ids else []
    return _REFUSALS[refused.reason].response(refused.message, details)


def reveals_env(principal: Principal) -> bool:
    """Whether task views for ``principal`` show ``config.env``'s values: an
    admin's only (see :func:`~testfleet.coordinator.api_views.task_view`)."""
    return principal.role.includes(Role.ADMIN)


def epoch_seconds(moment: datetime | None) -> float | None:
    """A query parameter's date and time as epoch seconds; one without a zone is UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso_8601_only(value: object) -> object:
    """Refuse what pydantic would also read as a date and time but the API does not
    document: a bare number (epoch seconds) is not an ISO 8601 time."""
    if isinstance(value, str):
        try:
            float(value)  # what pydantic would take as epoch seconds: 17, 1.7e9, nan
        except ValueError:
            return value
        raise ValueError("give an ISO 8601 date and time, e.g. 2024-05-01T12:00:00Z")
    return value


#: ``since`` of the benchmark queries.
IsoMoment = Annotated[
    datetime,
    BeforeValidator(_iso_8601_only),
    Query(description="Only runs recorded at or after this ISO 8601 time (UTC if naive)."),
]


def build_router(
    loop: CoordinatorLoop,
    view: StateView,
    store: StoreReader,
    max_tasks: int,
    started: float,
    auth: Auth,
) -> APIRouter:
    """Routes bound to one coordinator (built by the app factory): changes go
    through its ``loop``, live state is read through ``view``, history from
    ``store``. Every route but ``/health`` needs a token (``auth``): viewer to
    read, submitter to submit and cancel its own tasks, admin to drain."""
    router = APIRouter(prefix="/api/v1")
    #: Every route with a token: no usable token (401), the wrong role (403).
    authed = (UNAUTHENTICATED, FORBIDDEN)

    async def answer(
        request: Awaitable[Accepted | Refused],
        accepted: Callable[[Accepted], BaseModel],
    ) -> BaseModel | JSONResponse:
        """Await a change made through the loop and turn its answer into a response."""
        try:
            outcome = await request
        except CoordinatorUnavailableError as exc:
            return UNAVAILABLE.response(str(exc))
        if isinstance(outcome, Refused):
            return refusal_response(outcome)
        return accepted(outcome)

    @router.post(
        "/tasks",
        status_code=201,
        response_model=SubmitAnswer,
        responses=refusals(
            *authed,
            MALFORMED_BODY,
            DUPLICATE_TASK_ID,
            TOO_MANY_TASKS,
            UNSUPPORTED_MEDIA_TYPE,
            INVALID_TASK,
            QUOTA_EXCEEDED,
            UNAVAILABLE,
        ),
        openapi_extra=SUBMIT_OPENAPI,
        summary="Submit one task or a list of tasks (the task document of docs/formats.md)",
    )
    async def submit_tasks(request: Request, principal: SubmitterToken) -> BaseModel | JSONResponse:
        raw = await request.body()
        specs, problem = parse_task_body(raw, request.headers.get("content-type", ""))
        if problem is not None:
            return problem
        assert specs is not None
        if len(specs) > max_tasks:
            return TOO_MANY_TASKS.response(
                f"{len(specs)} tasks in one request; the limit is {max_tasks}: split the batch"
            )
        submitted = await answer(
            loop.submit(specs, principal.token_id),
            lambda done: SubmitAnswer(accepted=len(done.ids), task_ids=done.ids),
        )
        types = sorted({spec.type.value for spec in specs})
        if isinstance(submitted, SubmitAnswer):
            await auth.record(
                principal,
                AuditKind.TASKS_SUBMITTED,
                {"tasks": submitted.accepted, "types": types, "task_ids": submitted.task_ids[:20]},
            )
        elif isinstance(submitted, JSONResponse) and submitted.status_code == QUOTA_EXCEEDED.status:
            await auth.record(
                principal,
                AuditKind.QUOTA_EXCEEDED,
                {"tasks": len(specs), "types": types},
                AuditOutcome.REFUSED,
            )
        return submitted

    @router.get(
        "/tasks",
        response_model=TaskList,
        responses=refusals(*authed, INVALID_PARAMETER, STORAGE_ERROR),
        summary="List tasks, optionally filtered",
    )
    async def list_tasks(
        principal: ViewerToken,
        status: Annotated[
            list[ShownStatus] | None,
            Query(
                description="Any of these; `unschedulable`: queued tasks no connected "
                "worker can run (a subset of `queued`)."
            ),
        ] = None,
        type: Annotated[TaskType | None, Query()] = None,
        worker_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    ) -> TaskList:
        tasks, total = await asyncio.to_thread(
            lambda: (
                store.list_tasks(
                    statuses=status, task_type=type, worker_id=worker_id, limit=limit, offset=offset
                ),
                store.count_tasks(statuses=status, task_type=type, worker_id=worker_id),
            )
        )
        reveal = reveals_env(principal)
        return TaskList(
            tasks=[task_view(t, reveal_env=reveal) for t in tasks], total=total, offset=offset
        )

    @router.get(
        "/tasks/{task_id}",
        response_model=TaskDetail,
        responses=refusals(*authed, TASK_NOT_FOUND, STORAGE_ERROR),
        summary="One task with its attempts and result",
    )
    async def get_task(task_id: str, principal: ViewerToken) -> TaskDetail | JSONResponse:
        def read() -> Any:
            task = store.get_task(task_id)
            if task is None:
                return None
            return task, store.get_attempts(task_id), store.get_results(task_id)

        found = await asyncio.to_thread(read)
        if found is None:
            return TASK_NOT_FOUND.response(f"no task with id {task_id!r}")
        task, attempts, results = found
        counted = next((r for r in results if r.counted), None)
        return TaskDetail(
            task=task_view(task, reveal_env=reveals_env(principal)),
            attempts=[attempt_view(a) for a in attempts],
            result=result_view(counted) if counted else None,
            results=[result_view(r) for r in results],
        )

    @router.post(
        "/tasks/cancel",
        response_model=CancelAnswer,
        responses=refusals(*authed, MALFORMED_BODY, INVALID_PARAMETER, UNAVAILABLE),
        summary="Cancel several queued or running tasks at once",
        description="All in one step: a slot that cancelling one running task frees is "
        "never given to another task of the same request. Answers what became of each id.",
    )
    async def cancel_tasks(
        request: CancelRequest, principal: SubmitterToken
    ) -> CancelAnswer | JSONResponse:
        refused = await tasks_not_theirs(store, principal, request.task_ids)
        if refused:
            return await refuse_others(auth, principal, refused, "POST /api/v1/tasks/cancel")
        try:
            outcome = await loop.cancel(list(request.task_ids))
        except CoordinatorUnavailableError as exc:
            return UNAVAILABLE.response(str(exc))
        if outcome.cancelled:
            await auth.record(
                principal,
                AuditKind.TASKS_CANCELLED,
                {"tasks": len(outcome.cancelled), "task_ids": outcome.cancelled[:100]},
            )
        return CancelAnswer(
            cancelled=outcome.cancelled,
            already_finished=outcome.already_finished,
            not_found=outcome.not_found,
        )

    @router.post(
        "/tasks/{task_id}/cancel",
        response_model=TaskCancelled,
        responses=refusals(*authed, TASK_NOT_FOUND, ALREADY_FINISHED, UNAVAILABLE),
        summary="Cancel a queued or running task",
    )
    async def cancel_task(task_id: str, principal: SubmitterToken) -> TaskCancelled | JSONResponse:
        refused = await tasks_not_theirs(store, principal, [task_id])
        if refused:
            return await refuse_others(
                auth, principal, refused, f"POST /api/v1/tasks/{task_id}/cancel"
            )
        try:
            outcome = await loop.cancel([task_id])
        except CoordinatorUnavailableError as exc:
            return UNAVAILABLE.response(str(exc))
        if outcome.not_found:
            return TASK_NOT_FOUND.response(f"no task with id {task_id!r}")
        if outcome.already_finished:
            return ALREADY_FINISHED.response(
                f"task {task_id!r} has already finished; there is nothing to cancel"
            )
        await auth.record(principal, AuditKind.TASKS_CANCELLED, {"tasks": 1, "task_ids": [task_id]})
        return TaskCancelled(task_id=task_id, status=TaskStatus.CANCELLED)

    @router.get(
        "/workers",
        response_model=WorkerList,
        responses=refusals(*authed),
        summary="Workers known to the coordinator",
    )
    async def list_workers(_: ViewerToken) -> WorkerList:
        return WorkerList(workers=[worker_view(w) for w in view.workers()])

    def drain_state(worker_id: str) -> WorkerDrainState:
        """The worker as the change left it (read after the loop answered)."""
        worker = view.worker(worker_id)
        assert worker is not None  # the loop just accepted a change to it
        return WorkerDrainState(
            worker_id=worker_id, status=worker.record.status, draining=worker.draining
        )

    async def drain_changed(
        change: Awaitable[Accepted | Refused],
        worker_id: str,
        principal: Principal,
        kind: AuditKind,
    ) -> BaseModel | JSONResponse:
        """A drain or undrain once the loop has applied it: the worker's state,
        audited as ``kind``, or the refusal (which the auth layer has not seen)."""
        state = await answer(change, lambda _: drain_state(worker_id))
        if isinstance(state, WorkerDrainState):
            await auth.record(principal, kind, {"worker_id": worker_id})
        return state

    @router.post(
        "/workers/{worker_id}/drain",
        response_model=WorkerDrainState,
        responses=refusals(*authed, WORKER_NOT_FOUND, UNAVAILABLE),
        summary="Let a worker finish its work and take no more",
    )
    async def drain_worker(worker_id: str, principal: AdminToken) -> BaseModel | JSONResponse:
        return await drain_changed(
            loop.drain(worker_id), worker_id, principal, AuditKind.WORKER_DRAINED
        )

    @router.post(
        "/workers/{worker_id}/undrain",
        response_model=WorkerDrainState,
        responses=refusals(*authed, WORKER_NOT_FOUND, UNAVAILABLE),
        summary="Let a drained worker take work again",
    )
    async def undrain_worker(worker_id: str, principal: AdminToken) -> BaseModel | JSONResponse:
        return await drain_changed(
            loop.undrain(worker_id), worker_id, principal, AuditKind.WORKER_UNDRAINED
        )

    @router.get(
        "/stats",
        response_model=Stats,
        responses=refusals(*authed, STORAGE_ERROR),
        summary="Counts of tasks and workers, queue depth, loop counters",
    )
    async def stats(_: ViewerToken) -> Stats:
        counts = await asyncio.to_thread(store.status_counts)
        slots, queue = view.slots(), view.queue_depth()
        return Stats(
            tasks={status: counts.get(status, 0) for status in TaskStatus},
            workers=view.worker_counts(),
            slots=SlotCounts(total=slots.total, busy=slots.busy),
            queue=QueueCounts(pending=queue.pending, delayed=queue.delayed),
            unschedulable=[
                UnschedulableCount(reason=reason, tasks=n)
                for reason, n in view.unschedulable_counts().items()
            ],
            recovery=Recovery(unreadable_rows=view.unreadable_rows(100)),
            loop=LoopCounters(
                turns=loop.stats.turns,
                events=loop.stats.events,
                commits=loop.stats.commits,
                commit_seconds=round(loop.stats.commit_seconds, 6),
            ),
        )

    @router.get(
        "/results/models",
        response_model=BenchmarkModels,
        responses=refusals(*authed, STORAGE_ERROR),
        summary="Models that have benchmark results",
    )
    async def benchmark_models(_: ViewerToken) -> BenchmarkModels:
        return BenchmarkModels(models=await asyncio.to_thread(store.benchmark_models))

    @router.get(
        "/results/compare",
        response_model=BenchmarkComparison,
        responses=refusals(*authed, INVALID_PARAMETER, STORAGE_ERROR),
        summary="A model's latest benchmark figures per hardware, device, precision, batch size",
    )
    async def compare_results(
        _: ViewerToken,
        model: Annotated[str, Query(min_length=1, max_length=256, description="Model name.")],
        precision: Precision | None = None,
        hardware: HardwareKind | None = None,
        since: IsoMoment | None = None,
    ) -> BenchmarkComparison:
        rows = await asyncio.to_thread(
            store.benchmark_compare,
            model,
            precision=None if precision is None else precision.value,
            hardware=None if hardware is None else hardware.value,
            since=epoch_seconds(since),
        )
        return BenchmarkComparison(
            model=model,
            filters=CompareFilters(
                precision=precision, hardware=hardware, since=iso(epoch_seconds(since))
            ),
            rows=[CompareRow.model_validate(benchmark_row(row)) for row in rows],
        )

    @router.get(
        "/results/history",
        response_model=BenchmarkHistory,
        responses=refusals(*authed, INVALID_PARAMETER, STORAGE_ERROR),
        summary="Every benchmark run of a model over time",
    )
    async def result_history(
        _: ViewerToken,
        model: Annotated[str, Query(min_length=1, max_length=256, description="Model name.")],
        batch_size: Annotated[int | None, Query(ge=1, le=65536)] = None,
        precision: Precision | None = None,
        hardware: HardwareKind | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    ) -> BenchmarkHistory:
        rows = await asyncio.to_thread(
            store.benchmark_history,
            model,
            batch_size=batch_size,
            precision=None if precision is None else precision.value,
            hardware=None if hardware is None else hardware.value,
            limit=limit,
        )
        return BenchmarkHistory(
            model=model,
            filters=HistoryFilters(batch_size=batch_size, precision=precision, hardware=hardware),
            limit=limit,
            rows=[HistoryRow.model_validate(benchmark_row(row)) for row in rows],
        )

    @router.get(
        "/health/live",
        response_model=Liveness,
        responses=refusals(),
        summary="Liveness for Kubernetes: the process answers; no token needed",
        description="Always 200 while the process serves: `role` is `leader` here, and "
        "`standby` on a standby coordinator (failover on PostgreSQL), whose `/health` "
        "answers 503 so that only the leader is ready.",
    )
    async def health_live() -> Liveness:
        return Liveness(status=LiveStatus.ALIVE, role=CoordinatorRole.LEADER)

    @router.get(
        "/health",
        response_model=Health,
        responses={
            **refusals(),
            503: {
                "model": Health,
                "description": "The loop stopped after a storage failure (`status`: "
                "`failed`, with the `error`): the coordinator changes nothing more; or it "
                "is shutting down (`shutting_down`, after SIGTERM); or it cannot commit for "
                "want of disk space (`degraded`, with the `error`) and refuses requests until "
                "a retry commits, which it does on its own.",
            },
        },
        summary="Liveness; with a valid token, also version and counts",
        description="Needs no token, and then says only `status` (and a failed loop's "
        "`error`); with any valid token it adds the version, schema version, uptime and "
        "connected workers.",
    )
    async def health(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> JSONResponse:
        degraded = loop.degraded
        healthy = loop.failure is None and degraded is None and not loop.shutting_down
        if loop.failure is not None:
            body = Health(status=HealthStatus.FAILED, error=str(loop.failure))
        elif loop.shutting_down:
            body = Health(status=HealthStatus.SHUTTING_DOWN)
        elif degraded is not None:
            body = Health(status=HealthStatus.DEGRADED, error=degraded)
        else:
            body = Health(status=HealthStatus.OK)
        if credentials is not None and (await auth.identify(request, credentials))[0]:
            body = body.model_copy(
                update={
                    "version": testfleet.__version__,
                    "schema_version": store.schema_version,
                    "uptime_seconds": round(time.monotonic() - started, 3),
                    "workers_connected": view.connected_workers(),
                }
            )
        return JSONResponse(
            status_code=200 if healthy else 503,
            content=body.model_dump(mode="json", exclude_none=True),
        )

    return router
