"""Records as JSON documents for the REST API (and so for the CLI's --json).

Callers: :mod:`testfleet.coordinator.api`. Times are ISO 8601 in UTC; a task's
result is the design document's result format (docs/formats.md) unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from testfleet.coordinator.workers import LiveWorker
from testfleet.domain.records import AttemptRecord, ResultRecord, TaskRecord


def iso(timestamp: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with microseconds, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat().replace("+00:00", "Z")


def task_json(task: TaskRecord) -> dict[str, Any]:
    spec = task.spec
    return {
        "task_id": spec.task_id,
        "type": spec.type.value,
        "priority": spec.priority,
        "status": task.status.value,
        "unschedulable_reason": task.unschedulable_reason,
        "create_time": iso(task.create_time),
        "queued_at": iso(task.queued_at),
        "start_time": iso(task.start_time),
        "end_time": iso(task.end_time),
        "duration_seconds": (
            task.end_time - task.start_time
            if task.end_time is not None and task.start_time is not None
            else None
        ),
        "worker_id": task.worker_id,
        "attempts": task.attempts,
        "retry_not_before": iso(task.not_before),
        "requirements": spec.requirements.model_dump(mode="json", exclude_defaults=True),
        "config": spec.config,
        "timeout_seconds": spec.timeout_seconds,
        "retry_policy": spec.retry_policy.model_dump(mode="json"),
        "error": (
            {"error_class": task.error_class.value, "message": task.error_message}
            if task.error_class is not None
            else None
        ),
    }


def attempt_json(attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "attempt_id": attempt.attempt_id,
        "attempt": attempt.attempt,
        "worker_id": attempt.worker_id,
        "status": attempt.status.value,
        "start_time": iso(attempt.start_time),
        "accepted_time": iso(attempt.accepted_time),
        "end_time": iso(attempt.end_time),
        "execution_time_seconds": attempt.execution_time_seconds,
        "error_class": attempt.error_class.value if attempt.error_class else None,
        "error_message": attempt.error_message,
        "hardware_metrics": attempt.hardware_metrics,
    }


def result_json(result: ResultRecord) -> dict[str, Any]:
    """The result document (docs/formats.md), with its attempt and what became of it."""
    document = result.result.model_dump(mode="json")
    document["attempt_id"] = result.attempt_id
    document["counted"] = result.counted
    document["disposition"] = result.disposition.value
    document["received_time"] = iso(result.received_time)
    return document


def worker_json(worker: LiveWorker) -> dict[str, Any]:
    record = worker.record
    caps = record.capabilities
    return {
        "worker_id": record.worker_id,
        "hostname": record.hostname,
        "status": record.status.value,
        "connected": worker.connection_id is not None,
        "draining": worker.draining,
        "slots": record.slots,
        "running": len(worker.attempts),
        "registration_time": iso(record.registration_time),
        "last_heartbeat": iso(record.last_heartbeat),
        "hardware": [h.value for h in caps.hardware],
        "task_types": [t.value for t in caps.task_types],
        "tags": caps.tags,
        "load": record.hardware_metrics,
        "capabilities": caps.model_dump(mode="json"),
    }
