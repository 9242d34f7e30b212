"""Small builders of records for the store's tests (imported by the test modules).

Every builder gives a valid record with the fewest fields set; keyword
arguments override any field, so a test shows only what it is about.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from testfleet.domain.enums import (
    AttemptStatus,
    ResultDisposition,
    ResultStatus,
    TaskStatus,
    TaskType,
    WorkerStatus,
)
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.records import AttemptRecord, ResultRecord, TaskRecord, WorkerRecord
from testfleet.domain.result import SimulationStatus, TaskResult
from testfleet.domain.task import TaskSpec

#: 2023-11-14 22:13:20 UTC: a realistic epoch time with room for fractions.
T0 = 1_700_000_000.0


def capabilities(hostname: str = "host-1", **changes: Any) -> WorkerCapabilities:
    fields: dict[str, Any] = {"hostname": hostname, "os": "Linux", "python_version": "3.11.7"}
    fields.update(changes)
    return WorkerCapabilities(**fields)


def worker(worker_id: str = "w1", **changes: Any) -> WorkerRecord:
    record = WorkerRecord(
        worker_id=worker_id,
        hostname=f"{worker_id}.lab",
        registration_time=T0,
        last_heartbeat=T0,
        status=WorkerStatus.CONNECTED,
        capabilities=capabilities(f"{worker_id}.lab"),
        slots=1,
    )
    return replace(record, **changes)


def spec(task_id: str, **changes: Any) -> TaskSpec:
    fields: dict[str, Any] = {
        "task_id": task_id,
        "type": TaskType.SIMULATED,
        "config": {"duration_seconds": 1.0},
    }
    fields.update(changes)
    return TaskSpec(**fields)


def task(
    task_id: str,
    status: TaskStatus = TaskStatus.QUEUED,
    *,
    create_time: float = T0,
    **changes: Any,
) -> TaskRecord:
    record = TaskRecord(
        spec=spec(task_id),
        status=status,
        create_time=create_time,
        queued_at=create_time,
    )
    return replace(record, **changes)


def attempt(
    attempt_id: int,
    task_id: str,
    worker_id: str = "w1",
    status: AttemptStatus = AttemptStatus.ASSIGNED,
    **changes: Any,
) -> AttemptRecord:
    record = AttemptRecord(
        attempt_id=attempt_id,
        task_id=task_id,
        worker_id=worker_id,
        attempt=1,
        status=status,
        start_time=T0 + 1,
    )
    return replace(record, **changes)


def task_result(
    task_id: str, worker_id: str = "w1", status: ResultStatus = ResultStatus.COMPLETED
) -> TaskResult:
    return TaskResult(
        task_id=task_id,
        worker_id=worker_id,
        status=status,
        execution_time_seconds=1.5,
        simulation_status=SimulationStatus(is_simulated=True),
    )


def result(
    attempt_id: int,
    task_id: str,
    worker_id: str = "w1",
    *,
    counted: bool = True,
    **changes: Any,
) -> ResultRecord:
    record = ResultRecord(
        attempt_id=attempt_id,
        task_id=task_id,
        worker_id=worker_id,
        received_time=T0 + 3,
        disposition=ResultDisposition.OUTCOME if counted else ResultDisposition.LATE,
        result=task_result(task_id, worker_id),
    )
    return replace(record, **changes)


def write_as_before_version_5(monkeypatch: Any) -> None:
    """Make ``write_batch`` write tasks as builds before schema version 5 did
    (without ``submitted_by``), and attempts as builds before version 9 did (without
    ``slice_index`` and ``speculative``), for tests that fill an older file with it."""
    from testfleet.store import writer
    from testfleet.store.rows import ATTEMPTS, TASKS

    v9 = {"slice_index", "speculative", "spec_extras"}
    older = replace(
        TASKS, columns=tuple(c for c in TASKS.columns if c.name not in {"submitted_by", *v9})
    )
    monkeypatch.setattr(writer, "TASKS", older)
    older_attempts = replace(
        ATTEMPTS, columns=tuple(c for c in ATTEMPTS.columns if c.name not in v9)
    )
    monkeypatch.setattr(writer, "ATTEMPTS", older_attempts)
