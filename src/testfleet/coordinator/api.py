"""The REST API under ``/api/v1``: submit, list, inspect and cancel tasks; list and
drain workers; compare benchmark results across hardware and over time; stats
and health.

Callers: the ``testfleet`` CLI, the pytest plugin, scripts. Reads come from the
committed store (so what the API shows is durable); changes go through the
coordinator loop as events. Every error is ``{"error": {"code", "message",
"details"}}`` with a 4xx status that says what was wrong and which field.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
import yaml
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

import testfleet
from testfleet.coordinator.events import Accepted, RefusalReason, Refused
from testfleet.coordinator.loop import CoordinatorLoop, CoordinatorUnavailableError
from testfleet.coordinator.render import attempt_json, iso, result_json, task_json, worker_json
from testfleet.domain.benchmark import Precision
from testfleet.domain.enums import HardwareKind, ShownStatus, TaskStatus, TaskType, WorkerStatus
from testfleet.domain.json_values import INT64_MAX, json_value_problems
from testfleet.domain.task import TaskSpec
from testfleet.store import Store

# Two adapters, chosen by the body's shape: a union would report both branches
# failing and label fields with pydantic's internal branch names.
ONE_TASK: TypeAdapter[TaskSpec] = TypeAdapter(TaskSpec)
MANY_TASKS: TypeAdapter[list[TaskSpec]] = TypeAdapter(list[TaskSpec])


class ErrorCode(StrEnum):
    MALFORMED_BODY = "malformed_body"
    INVALID_TASK = "invalid_task"
    DUPLICATE_TASK_ID = "duplicate_task_id"
    NOT_FOUND = "not_found"
    ALREADY_FINISHED = "already_finished"
    TOO_MANY_TASKS = "too_many_tasks"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAVAILABLE = "unavailable"
    BODY_TOO_LARGE = "body_too_large"
    INVALID_PARAMETER = "invalid_parameter"
    STORAGE_ERROR = "storage_error"
    INVALID_QUERY = "invalid_query"
    QUERY_TIMEOUT = "query_timeout"


class CancelRequest(BaseModel):
    """The body of ``POST /tasks/cancel``."""

    model_config = ConfigDict(extra="forbid")

    task_ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=10_000, description="The tasks to cancel, all at once."
    )


def error_response(
    status: int, code: ErrorCode, message: str, details: list[dict[str, Any]] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code.value, "message": message, "details": details or []}},
    )


_REFUSAL_STATUS = {
    RefusalReason.DUPLICATE_TASK_ID: (409, ErrorCode.DUPLICATE_TASK_ID),
    RefusalReason.NOT_FOUND: (404, ErrorCode.NOT_FOUND),
}


def refusal_response(refused: Refused) -> JSONResponse:
    status, code = _REFUSAL_STATUS[refused.reason]
    return error_response(status, code, refused.message, [{"ids": refused.ids}])


def field_path(loc: Sequence[str | int], *, many: bool) -> str:
    """A location in a submission as users write it: ``tasks[3].config.argv[0]``
    (``many``: the body is a list of tasks), or ``config.env.HOME`` for one task."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int) and many and not parts:
            parts.append(f"tasks[{item}]")
        elif isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        else:
            # Keys come from the request: a megabyte-long one is not echoed whole.
            parts.append(item if len(item) <= 100 else item[:97] + "...")
    return ".".join(parts) or "(body)"


def validation_details(exc: ValidationError, *, many: bool) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"field": "tasks[3].timeout_seconds", "problem": ...}``."""
    return [
        {"field": field_path(err["loc"], many=many), "problem": err["msg"], "type": err["type"]}
        for err in exc.errors(include_input=False)[:50]
    ]


def _invalid_task(details: list[dict[str, Any]]) -> JSONResponse:
    first = details[0] if details else {"field": "(body)", "problem": "invalid"}
    return error_response(
        422,
        ErrorCode.INVALID_TASK,
        f"invalid task: {first['field']}: {first['problem']} "
        f"({len(details)} problem(s); nothing was accepted)",
        details,
    )


def parse_task_body(
    raw: bytes, content_type: str
) -> tuple[list[TaskSpec] | None, JSONResponse | None]:
    """Parse a submission (JSON, or YAML when sent as YAML): a task document or a list."""
    media = content_type.split(";")[0].strip().lower()
    try:
        if media in ("application/yaml", "application/x-yaml", "text/yaml"):
            document: Any = yaml.safe_load(raw.decode("utf-8"))
        elif media in ("application/json", ""):
            document = orjson.loads(raw)
        else:
            return None, error_response(
                415,
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {media!r} is not accepted; send application/json "
                "(or application/yaml)",
            )
    except (orjson.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, error_response(
            400, ErrorCode.MALFORMED_BODY, f"the request body is not valid JSON/YAML: {exc}"
        )
    if not isinstance(document, dict | list):
        return None, error_response(
            422,
            ErrorCode.INVALID_TASK,
            "the body must be a task document (an object) or a list of them, "
            f"got {type(document).__name__}",
        )
    many = isinstance(document, list)
    # Before the models: YAML carries inf, nan, huge integers and lone
    # surrogates that no store can hold, and a NUL byte in a task would fail
    # only later, on a worker (see testfleet.domain.json_values).
    problems = json_value_problems(document, allow_nul=False)
    if problems:
        return None, _invalid_task(
            [
                {"field": field_path(p.path, many=many), "problem": p.problem, "type": "value"}
                for p in problems
            ]
        )
    try:
        specs = (
            MANY_TASKS.validate_python(document)
            if isinstance(document, list)
            else [ONE_TASK.validate_python(document)]
        )
    except ValidationError as exc:
        return None, _invalid_task(validation_details(exc, many=many))
    if not specs:
        return None, error_response(422, ErrorCode.INVALID_TASK, "the list of tasks is empty")
    return specs, None


_TASK_SCHEMA_REF = {"$ref": "#/components/schemas/TaskSpec"}
SUBMIT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [_TASK_SCHEMA_REF, {"type": "array", "items": _TASK_SCHEMA_REF}]
                }
            },
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def benchmark_json(row: dict[str, Any]) -> dict[str, Any]:
    """A row of the store's benchmark analysis as JSON: ISO 8601 times, and ``null``
    for a figure that is not finite (JSON has no infinity)."""
    document: dict[str, Any] = {}
    for name, value in row.items():
        if name == "recorded_time":
            value = iso(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        document[name] = value
    return document


def epoch_seconds(moment: datetime | None) -> float | None:
    """A query parameter's date and time as epoch seconds; one without a zone is UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def build_router(loop: CoordinatorLoop, store: Store, max_tasks: int, started: float) -> APIRouter:
    """Routes bound to one coordinator's loop and store (built by the app factory)."""
    router = APIRouter(prefix="/api/v1")

    async def answer(
        request: Awaitable[Accepted | Refused],
        accepted: Callable[[Accepted], JSONResponse | dict[str, Any]],
    ) -> JSONResponse | dict[str, Any]:
        """Await a change made through the loop and turn its answer into a response."""
        try:
            outcome = await request
        except CoordinatorUnavailableError as exc:
            return error_response(503, ErrorCode.UNAVAILABLE, str(exc))
        if isinstance(outcome, Refused):
            return refusal_response(outcome)
        return accepted(outcome)

    @router.post(
        "/tasks",
        status_code=201,
        openapi_extra=SUBMIT_OPENAPI,
        summary="Submit one task or a list of tasks (the task document of docs/formats.md)",
    )
    async def submit_tasks(request: Request) -> Any:
        raw = await request.body()
        specs, problem = parse_task_body(raw, request.headers.get("content-type", ""))
        if problem is not None:
            return problem
        assert specs is not None
        if len(specs) > max_tasks:
            return error_response(
                413,
                ErrorCode.TOO_MANY_TASKS,
                f"{len(specs)} tasks in one request; the limit is {max_tasks}: split the batch",
            )
        return await answer(
            loop.submit(specs),
            lambda done: JSONResponse(
                status_code=201, content={"accepted": len(done.ids), "task_ids": done.ids}
            ),
        )

    @router.get("/tasks", summary="List tasks, optionally filtered")
    async def list_tasks(
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
    ) -> dict[str, Any]:
        tasks, total = await asyncio.to_thread(
            lambda: (
                store.list_tasks(
                    statuses=status, task_type=type, worker_id=worker_id, limit=limit, offset=offset
                ),
                store.count_tasks(statuses=status, task_type=type, worker_id=worker_id),
            )
        )
        return {"tasks": [task_json(t) for t in tasks], "total": total, "offset": offset}

    @router.get("/tasks/{task_id}", summary="One task with its attempts and result")
    async def get_task(task_id: str) -> Any:
        def read() -> Any:
            task = store.get_task(task_id)
            if task is None:
                return None
            return task, store.get_attempts(task_id), store.get_results(task_id)

        found = await asyncio.to_thread(read)
        if found is None:
            return error_response(404, ErrorCode.NOT_FOUND, f"no task with id {task_id!r}")
        task, attempts, results = found
        counted = next((r for r in results if r.counted), None)
        return {
            "task": task_json(task),
            "attempts": [attempt_json(a) for a in attempts],
            "result": result_json(counted) if counted else None,
            "results": [result_json(r) for r in results],
        }

    @router.post(
        "/tasks/cancel",
        summary="Cancel several queued or running tasks at once",
        description="All in one step: a slot that cancelling one running task frees is "
        "never given to another task of the same request. Answers what became of each id.",
    )
    async def cancel_tasks(request: CancelRequest) -> Any:
        try:
            outcome = await loop.cancel(list(request.task_ids))
        except CoordinatorUnavailableError as exc:
            return error_response(503, ErrorCode.UNAVAILABLE, str(exc))
        return {
            "cancelled": outcome.cancelled,
            "already_finished": outcome.already_finished,
            "not_found": outcome.not_found,
        }

    @router.post("/tasks/{task_id}/cancel", summary="Cancel a queued or running task")
    async def cancel_task(task_id: str) -> Any:
        try:
            outcome = await loop.cancel([task_id])
        except CoordinatorUnavailableError as exc:
            return error_response(503, ErrorCode.UNAVAILABLE, str(exc))
        if outcome.not_found:
            return error_response(404, ErrorCode.NOT_FOUND, f"no task with id {task_id!r}")
        if outcome.already_finished:
            return error_response(
                409,
                ErrorCode.ALREADY_FINISHED,
                f"task {task_id!r} has already finished; there is nothing to cancel",
            )
        return {"task_id": task_id, "status": TaskStatus.CANCELLED.value}

    @router.get("/workers", summary="Workers known to the coordinator")
    async def list_workers() -> dict[str, Any]:
        workers = sorted(loop.state.workers.values(), key=lambda w: w.record.worker_id)
        return {"workers": [worker_json(w) for w in workers]}

    @router.post(
        "/workers/{worker_id}/drain", summary="Let a worker finish its work and take no more"
    )
    async def drain_worker(worker_id: str) -> Any:
        return await answer(
            loop.drain(worker_id),
            lambda _: {"worker_id": worker_id, "status": WorkerStatus.DRAINING.value},
        )

    @router.get("/stats", summary="Counts of tasks and workers, queue depth, loop counters")
    async def stats() -> dict[str, Any]:
        counts = await asyncio.to_thread(store.status_counts)
        state = loop.state
        worker_counts = {s.value: 0 for s in WorkerStatus}
        for worker in state.workers.values():
            worker_counts[worker.record.status.value] += 1
        unschedulable: dict[str, int] = {}
        for task in state.tasks.values():
            if task.unschedulable_reason is not None and task.status is TaskStatus.QUEUED:
                unschedulable[task.unschedulable_reason] = (
                    unschedulable.get(task.unschedulable_reason, 0) + 1
                )
        return {
            "tasks": {status.value: counts.get(status, 0) for status in TaskStatus},
            "workers": worker_counts,
            "slots": {
                "total": sum(w.record.slots for w in state.workers.values() if w.connection_id),
                "busy": sum(len(w.attempts) for w in state.workers.values() if w.connection_id),
            },
            "queue": {"pending": len(state.queue), "delayed": state.queue.delayed_count},
            "unschedulable": [
                {"reason": reason, "tasks": n} for reason, n in sorted(unschedulable.items())
            ],
            "recovery": {"unreadable_rows": state.unreadable_rows[:100]},
            "loop": {
                "turns": loop.stats.turns,
                "events": loop.stats.events,
                "commits": loop.stats.commits,
                "commit_seconds": round(loop.stats.commit_seconds, 6),
            },
        }

    @router.get("/results/models", summary="Models that have benchmark results")
    async def benchmark_models() -> dict[str, Any]:
        return {"models": await asyncio.to_thread(store.benchmark_models)}

    @router.get(
        "/results/compare",
        summary="A model's latest benchmark figures per hardware, device, precision, batch size",
    )
    async def compare_results(
        model: Annotated[str, Query(min_length=1, max_length=256, description="Model name.")],
        precision: Precision | None = None,
        hardware: HardwareKind | None = None,
        since: Annotated[
            datetime | None,
            Query(description="Only runs recorded at or after this ISO 8601 time (UTC if naive)."),
        ] = None,
    ) -> dict[str, Any]:
        rows = await asyncio.to_thread(
            store.benchmark_compare,
            model,
            precision=None if precision is None else precision.value,
            hardware=None if hardware is None else hardware.value,
            since=epoch_seconds(since),
        )
        return {
            "model": model,
            "filters": {
                "precision": precision,
                "hardware": hardware,
                "since": iso(epoch_seconds(since)),
            },
            "rows": [benchmark_json(row) for row in rows],
        }

    @router.get("/results/history", summary="Every benchmark run of a model over time")
    async def result_history(
        model: Annotated[str, Query(min_length=1, max_length=256, description="Model name.")],
        batch_size: Annotated[int | None, Query(ge=1, le=65536)] = None,
        precision: Precision | None = None,
        hardware: HardwareKind | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    ) -> dict[str, Any]:
        rows = await asyncio.to_thread(
            store.benchmark_history,
            model,
            batch_size=batch_size,
            precision=None if precision is None else precision.value,
            hardware=None if hardware is None else hardware.value,
            limit=limit,
        )
        return {
            "model": model,
            "filters": {"batch_size": batch_size, "precision": precision, "hardware": hardware},
            "limit": limit,
            "rows": [benchmark_json(row) for row in rows],
        }

    @router.get("/health", summary="Liveness and version")
    async def health() -> Any:
        healthy = loop.failure is None
        body = {
            "status": "ok" if healthy else "failed",
            "version": testfleet.__version__,
            "schema_version": store.schema_version,
            "uptime_seconds": round(time.monotonic() - started, 3),
            "workers_connected": sum(
                1 for w in loop.state.workers.values() if w.connection_id is not None
            ),
        }
        if not healthy:
            body["error"] = str(loop.failure)
        return JSONResponse(status_code=200 if healthy else 503, content=body)

    @router.post("/workers/{worker_id}/undrain", summary="Let a drained worker take work again")
    async def undrain_worker(worker_id: str) -> Any:
        return await answer(
            loop.undrain(worker_id),
            lambda _: {"worker_id": worker_id, "draining": False},
        )

    return router
