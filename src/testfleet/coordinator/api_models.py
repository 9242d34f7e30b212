"""The REST API's response bodies, as pydantic models: what every route returns
when it succeeds, and the one shape every error has.

Callers: the routes (:mod:`~testfleet.coordinator.api`,
:mod:`~testfleet.coordinator.pytest_runs_api`) build these (through
:mod:`~testfleet.coordinator.api_views`) and return them; FastAPI serializes them
straight to JSON and publishes their schemas in the OpenAPI document, so the
document describes what is really sent. :mod:`~testfleet.coordinator.api_errors`
builds every error body from :class:`ErrorBody`.

Fields keep the names and order the API has always sent (the CLI's ``--json``
output is these documents). Times are ISO 8601 strings in UTC (see
:func:`~testfleet.coordinator.api_views.iso`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from testfleet.coordinator.leadership import CoordinatorRole
from testfleet.domain.benchmark import Precision
from testfleet.domain.enums import (
    AttemptStatus,
    ErrorClass,
    HardwareKind,
    ResultDisposition,
    TaskStatus,
    TaskType,
    WorkerStatus,
)
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.pytest_tasks import TestOutcome, TestRecord
from testfleet.domain.result import TaskResult
from testfleet.domain.task import RetryPolicy

#: An instant as ISO 8601 in UTC, e.g. ``2024-05-01T12:00:00.250000Z``.
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class ResponseModel(BaseModel):
    """Base of every response body: a field the model does not name is a bug,
    and the published schema says so (``additionalProperties: false``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------- errors


class ErrorCode(StrEnum):
    """``error.code`` of an error response: what was wrong, for programs to act on."""

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
    RATE_LIMITED = "rate_limited"
    REQUEST_TIMEOUT = "request_timeout"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    QUOTA_EXCEEDED = "quota_exceeded"
    BACKUP_IN_PROGRESS = "backup_in_progress"


class FieldProblem(ResponseModel):
    """One problem with one field of a request."""

    field: str = Field(
        description="Where, as the user wrote it: `tasks[3].timeout_seconds` or "
        "`config.env.HOME` in a task document, `query.limit` or `body.task_ids` elsewhere."
    )
    problem: str = Field(description="What is wrong with it, in words.")
    type: str = Field(description="The kind of problem, for programs (pydantic's error type).")


class RefusedIds(ResponseModel):
    """The ids a refused request named that caused the refusal."""

    ids: list[str]


class ErrorInfo(ResponseModel):
    code: ErrorCode
    message: str = Field(description="What was wrong and what to do, in one sentence.")
    details: list[FieldProblem | RefusedIds]


class ErrorBody(ResponseModel):
    """Every error the API sends: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorInfo


# ------------------------------------------------------------------ tasks


class SubmitAnswer(ResponseModel):
    """What ``POST /tasks`` accepted: every task of the request, committed."""

    accepted: int
    task_ids: list[str]


class TaskErrorView(ResponseModel):
    """Why a task (or a run's chunk) did not complete."""

    error_class: ErrorClass
    message: str | None


class TaskView(ResponseModel):
    """A task as submitted and where it is now."""

    task_id: str
    type: TaskType
    priority: int
    status: TaskStatus
    unschedulable_reason: str | None
    create_time: Timestamp | None
    queued_at: Timestamp | None
    start_time: Timestamp | None
    end_time: Timestamp | None
    duration_seconds: float | None
    worker_id: str | None
    attempts: int
    retry_not_before: Timestamp | None
    # As submitted, without the fields left at their defaults: short to read,
    # and each field still means what the Requirements schema says.
    # (allOf: pydantic resolves a bare $ref itself, and this one is added by
    # coordinator.openapi with the task document's schemas.)
    requirements: Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "allOf": [{"$ref": "#/components/schemas/Requirements"}],
                "description": "The requirements given at submission (defaults left out).",
            }
        ),
    ]
    config: dict[str, Any] = Field(
        description="The config as submitted, except that each value of its `env` is "
        'shown as `"***"` (the names are kept): an environment can carry secrets.'
    )
    timeout_seconds: float
    retry_policy: RetryPolicy
    error: TaskErrorView | None
    fallbacks: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The requirement slices tried after `requirements`, as submitted "
        "(see RequirementFallback).",
    )
    slice_index: int = Field(
        default=0,
        description="The requirement slice the task waits for (queued) or last ran under: "
        "0 for `requirements`, i for `fallbacks[i-1]`.",
    )
    idempotent: bool = Field(
        default=False,
        description="Whether it may get a speculative copy when it straggles (its "
        "`idempotent`, or its type's default: tests and benchmarks yes, commands no).",
    )
    expected_seconds: float | None = None


class TaskList(ResponseModel):
    tasks: list[TaskView]
    total: int = Field(description="Tasks that match the filters, over all pages.")
    offset: int


class AttemptView(ResponseModel):
    """One try of a task on a worker."""

    attempt_id: int
    attempt: int
    worker_id: str
    status: AttemptStatus
    start_time: Timestamp | None
    accepted_time: Timestamp | None
    end_time: Timestamp | None
    execution_time_seconds: float | None
    error_class: ErrorClass | None
    error_message: str | None
    hardware_metrics: dict[str, Any]
    slice_index: int = Field(
        default=0, description="The requirement slice it was placed under (0: `requirements`)."
    )
    speculative: bool = Field(
        default=False, description="A speculative copy of a straggling attempt."
    )


class ResultView(TaskResult):
    """A result a worker reported (docs/formats.md, unchanged), with the attempt it
    belongs to and what became of it."""

    attempt_id: int
    counted: bool = Field(description="Whether this result is its task's outcome.")
    disposition: ResultDisposition
    received_time: Timestamp | None


class TaskDetail(ResponseModel):
    task: TaskView
    attempts: list[AttemptView]
    result: ResultView | None = Field(description="The counted result, once there is one.")
    results: list[ResultView] = Field(description="Every result received, counted or not.")


class CancelAnswer(ResponseModel):
    """What became of each id of a ``POST /tasks/cancel`` (each id in one list)."""

    cancelled: list[str]
    already_finished: list[str]
    not_found: list[str]


class TaskCancelled(ResponseModel):
    task_id: str
    status: TaskStatus


# ---------------------------------------------------------------- workers


class WorkerView(ResponseModel):
    """A worker as the coordinator sees it now, with what it reported having."""

    worker_id: str
    hostname: str
    status: WorkerStatus
    connected: bool
    draining: bool
    slots: int
    running: int
    registration_time: Timestamp | None
    last_heartbeat: Timestamp | None
    hardware: list[HardwareKind]
    task_types: list[TaskType]
    tags: dict[str, str]
    load: dict[str, Any] = Field(description="The machine's metrics at its last heartbeat.")
    capabilities: WorkerCapabilities
    speed_factor: float = Field(
        default=1.0,
        description="Measured speed against workers of its hardware class on the same work: "
        "1.0 typical (also until measured), 2.0 twice as fast, 0.5 half as fast.",
    )
    speed_samples: int = Field(
        default=0, description="Comparisons its speed factor is the median of (recent ones)."
    )
    slowed: bool = Field(
        default=False,
        description="Its speed factor fell well below its own baseline (throttling, a noisy "
        "neighbour); the coordinator logged a warning.",
    )


class WorkerList(ResponseModel):
    workers: list[WorkerView]


class WorkerDrainState(ResponseModel):
    """A worker after ``drain`` or ``undrain``."""

    worker_id: str
    status: WorkerStatus
    draining: bool


# ------------------------------------------------------------ stats, health


class SlotCounts(ResponseModel):
    total: int = Field(description="Slots of the connected workers.")
    busy: int


class QueueCounts(ResponseModel):
    pending: int
    delayed: int = Field(description="Retries waiting out their retry delay.")


class UnschedulableCount(ResponseModel):
    reason: str
    tasks: int


class Recovery(ResponseModel):
    unreadable_rows: list[str] = Field(
        description="Rows left out at start-up because they could not be read (at most 100)."
    )


class LoopCounters(ResponseModel):
    turns: int
    events: int
    commits: int
    commit_seconds: float


class Stats(ResponseModel):
    tasks: dict[TaskStatus, int] = Field(description="Tasks per status, every status present.")
    workers: dict[WorkerStatus, int] = Field(
        description="Workers per status, every status present."
    )
    slots: SlotCounts
    queue: QueueCounts
    unschedulable: list[UnschedulableCount]
    recovery: Recovery
    loop: LoopCounters


class HealthStatus(StrEnum):
    OK = "ok"
    #: The loop stopped after a storage failure: the coordinator changes nothing more.
    FAILED = "failed"
    #: SIGTERM: it commits what is in flight and exits; submissions are refused.
    SHUTTING_DOWN = "shutting_down"
    #: A commit found the disk full: requests are refused while the loop retries
    #: it, and taken again, with no restart, once it commits.
    DEGRADED = "degraded"


class Health(ResponseModel):
    """Without a valid token only ``status`` (and a failed loop's ``error``) is
    sent: a load balancer's probe needs no token and learns nothing more."""

    status: HealthStatus
    version: str | None = None
    schema_version: int | None = None
    uptime_seconds: float | None = None
    workers_connected: int | None = None
    error: str | None = Field(
        default=None,
        description="Why the loop stopped (`failed`) or cannot commit (`degraded`); "
        "only with those statuses.",
    )


class LiveStatus(StrEnum):
    ALIVE = "alive"


class Liveness(ResponseModel):
    """``/health/live``: the process answers (Kubernetes liveness), and whether it
    leads; a standby coordinator answers the same with ``role`` ``standby``."""

    status: LiveStatus
    role: CoordinatorRole


# ---------------------------------------------------------- benchmark results


class BenchmarkFigures(ResponseModel):
    """One run of a benchmark at one batch size (a row of ``benchmark_results``);
    figures are null where the run failed at this size, or were not finite."""

    variant: str
    hardware: str
    device_name: str
    precision: str
    batch_size: int
    is_simulated: bool
    recorded_time: Timestamp | None
    task_id: str
    worker_id: str
    attempt_id: int
    throughput_items_per_second: float | None
    latency_ms: float | None
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    memory_mb: float | None
    error_class: str | None
    error_message: str | None
    torch_version: str | None
    transformers_version: str | None
    load_note: str | None
    #: What ran the model (issue 15): torch, onnxruntime, openvino or browser.
    backend: str = "torch"
    #: The backend's outputs against torch's: passed, failed, or null (not compared).
    output_check: str | None = None
    output_max_abs_diff: float | None = None


class CompareRow(BenchmarkFigures):
    """The latest run of one configuration, and how many runs it has."""

    runs: int
    failed_runs: int


class HistoryRow(BenchmarkFigures):
    """One run, with the change from the same configuration's previous measured run."""

    throughput_change_percent: float | None
    latency_change_percent: float | None


class CompareFilters(ResponseModel):
    precision: Precision | None
    hardware: HardwareKind | None
    since: Timestamp | None


class BenchmarkComparison(ResponseModel):
    model: str
    filters: CompareFilters
    rows: list[CompareRow]


class HistoryFilters(ResponseModel):
    batch_size: int | None
    precision: Precision | None
    hardware: HardwareKind | None


class BenchmarkHistory(ResponseModel):
    model: str
    filters: HistoryFilters
    limit: int
    rows: list[HistoryRow]


class BenchmarkModels(ResponseModel):
    models: list[str]


# -------------------------------------------------------------- pytest runs


class RunTaskView(ResponseModel):
    """A chunk task of a pytest run, without its (long) list of node ids."""

    task_id: str
    status: TaskStatus
    worker_id: str | None
    attempts: int
    unschedulable_reason: str | None
    start_time: Timestamp | None
    end_time: Timestamp | None
    error: TaskErrorView | None


class TestRowView(ResponseModel):
    """One test of a run, recorded once, with everything pytest reported for it."""

    __test__ = False

    seq: int
    task_id: str
    nodeid: str
    attempt_id: int
    worker_id: str
    rerun: int
    outcome: TestOutcome
    duration_seconds: float
    crashed: bool
    recorded_time: Timestamp | None
    record: TestRecord


class TestRunView(ResponseModel):
    __test__ = False

    run_id: str
    tasks: list[RunTaskView]
    tests: list[TestRowView]
    last_seq: int = Field(description="Pass it as `after_seq` to get only newer tests.")
    more: bool = Field(description="A full page: ask again with `after_seq` for the rest.")


class TestDurations(ResponseModel):
    __test__ = False

    project: str
    durations: dict[str, float] = Field(
        description="Median seconds per node id over its last few runs."
    )
