"""Records as the REST API's response bodies (and so the CLI's --json).

Callers: the routes of :mod:`testfleet.coordinator.api` and
:mod:`testfleet.coordinator.pytest_runs_api`. Each function turns a record into
its :mod:`~testfleet.coordinator.api_models` model. Times are ISO 8601 in
UTC; a task's result is the design document's result format
(docs/formats.md) unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from testfleet.coordinator.api_models import (
    AttemptView,
    ResultView,
    RunTaskView,
    TaskErrorView,
    TaskView,
    TestRowView,
    WorkerView,
)
from testfleet.coordinator.state_view import WorkerSnapshot
from testfleet.domain.pytest_tasks import TestResultRow
from testfleet.domain.records import AttemptRecord, ResultRecord, TaskRecord
from testfleet.domain.task import is_idempotent
from testfleet.store.pytest_queries import RunTask


def iso(timestamp: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with microseconds, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat().replace("+00:00", "Z")


def task_error_view(error_class: object, message: str | None) -> TaskErrorView | None:
    """A finished task's classified error, or None when it ended without one. The
    class comes as the record's enum or, from a stored row, its text; the model
    validates either."""
    if error_class is None:
        return None
    return TaskErrorView.model_validate({"error_class": error_class, "message": message})


#: What a value of a task's ``config.env`` is shown as to those who may not see it.
REDACTED = "***"


def redacted_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with every value of its ``env`` (command and test tasks) replaced
    by :data:`REDACTED`, the names kept: environments carry tokens and passwords,
    and a listing must not hand them to everyone who can read the task. Other
    fields are shown as given."""
    shown = dict(config)
    env = shown.get("env")
    if isinstance(env, Mapping):
        shown["env"] = dict.fromkeys(env, REDACTED)
    return shown


def task_view(task: TaskRecord, *, reveal_env: bool = False) -> TaskView:
    """A task as the API shows it. ``config.env``'s values are redacted unless
    ``reveal_env``: the task routes pass it for an admin's token
    (``api.reveals_env``), so viewers and submitters, the task's own submitter
    included, see only the names. The worker's assignment is built from the
    record, not from this view, so it always carries the real values."""
    spec = task.spec
    return TaskView(
        task_id=spec.task_id,
        type=spec.type,
        priority=spec.priority,
        status=task.status,
        unschedulable_reason=task.unschedulable_reason,
        create_time=iso(task.create_time),
        queued_at=iso(task.queued_at),
        start_time=iso(task.start_time),
        end_time=iso(task.end_time),
        duration_seconds=(
            task.end_time - task.start_time
            if task.end_time is not None and task.start_time is not None
            else None
        ),
        worker_id=task.worker_id,
        attempts=task.attempts,
        retry_not_before=iso(task.not_before),
        requirements=spec.requirements.model_dump(mode="json", exclude_defaults=True),
        config=spec.config if reveal_env else redacted_config(spec.config),
        timeout_seconds=spec.timeout_seconds,
        retry_policy=spec.retry_policy,
        error=task_error_view(task.error_class, task.error_message),
        fallbacks=[f.model_dump(mode="json", exclude_defaults=True) for f in spec.fallbacks],
        slice_index=task.slice_index,
        idempotent=is_idempotent(spec),
        expected_seconds=spec.expected_seconds,
    )


def attempt_view(attempt: AttemptRecord) -> AttemptView:
    return AttemptView(
        attempt_id=attempt.attempt_id,
        attempt=attempt.attempt,
        worker_id=attempt.worker_id,
        status=attempt.status,
        start_time=iso(attempt.start_time),
        accepted_time=iso(attempt.accepted_time),
        end_time=iso(attempt.end_time),
        execution_time_seconds=attempt.execution_time_seconds,
        error_class=attempt.error_class,
        error_message=attempt.error_message,
        hardware_metrics=attempt.hardware_metrics,
        slice_index=attempt.slice_index,
        speculative=attempt.speculative,
    )


def result_view(result: ResultRecord) -> ResultView:
    """The result document (docs/formats.md), with its attempt and what became of it."""
    return ResultView(
        **dict(result.result),
        attempt_id=result.attempt_id,
        counted=result.counted,
        disposition=result.disposition,
        received_time=iso(result.received_time),
    )


def worker_view(worker: WorkerSnapshot) -> WorkerView:
    record = worker.record
    caps = record.capabilities
    return WorkerView(
        worker_id=record.worker_id,
        hostname=record.hostname,
        status=record.status,
        connected=worker.connected,
        draining=worker.draining,
        slots=record.slots,
        running=worker.running,
        registration_time=iso(record.registration_time),
        last_heartbeat=iso(record.last_heartbeat),
        hardware=caps.hardware,
        task_types=caps.task_types,
        tags=caps.tags,
        load=record.hardware_metrics,
        capabilities=caps,
        speed_factor=worker.speed.factor,
        speed_samples=worker.speed.samples,
        slowed=worker.speed.slowed,
    )


def run_task_view(task: RunTask) -> RunTaskView:
    """A chunk task without its (long) node id list: what a polling client needs."""
    return RunTaskView(
        task_id=task.task_id,
        status=task.status,
        worker_id=task.worker_id,
        attempts=task.attempts,
        unschedulable_reason=task.unschedulable_reason,
        start_time=iso(task.start_time),
        end_time=iso(task.end_time),
        error=task_error_view(task.error_class, task.error_message),
    )


def run_test_view(row: TestResultRow) -> TestRowView:
    return TestRowView(
        seq=row.seq,
        task_id=row.task_id,
        nodeid=row.nodeid,
        attempt_id=row.attempt_id,
        worker_id=row.worker_id,
        rerun=row.rerun,
        outcome=row.outcome,
        duration_seconds=row.duration_seconds,
        crashed=row.crashed,
        recorded_time=iso(row.recorded_time),
        record=row.record,
    )


def benchmark_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row of the store's benchmark analysis as the API shows it: ISO 8601 times,
    and ``None`` for a figure that is not finite (JSON has no infinity)."""
    document: dict[str, Any] = {}
    for name, value in row.items():
        if name == "recorded_time":
            value = iso(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        document[name] = value
    return document
