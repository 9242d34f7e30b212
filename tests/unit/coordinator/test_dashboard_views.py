"""The dashboard's rows, pure: worker states and filters, why a task waits, chart points."""

from __future__ import annotations

from dataclasses import replace

import pytest

from testfleet.coordinator.dashboard.history import chart_point, history_sql
from testfleet.coordinator.dashboard.views import (
    FleetState,
    WorkerFilter,
    failure_rate,
    fleet_state,
    overview,
    task_row,
    wait_reason,
    worker_row,
)
from testfleet.coordinator.state_view import PriorityLevel, QueuedPlace, WorkerSnapshot
from testfleet.domain.enums import ShownStatus, TaskStatus, TaskType, WorkerStatus
from testfleet.domain.hardware import GpuInfo, WorkerCapabilities
from testfleet.domain.records import TaskRecord, WorkerRecord
from testfleet.domain.task import TaskSpec

T0 = 1_800_000_000.0


def snapshot(
    worker_id: str,
    status: WorkerStatus = WorkerStatus.CONNECTED,
    *,
    running: int = 0,
    draining: bool = False,
    tags: dict[str, str] | None = None,
) -> WorkerSnapshot:
    caps = WorkerCapabilities(
        hostname=f"{worker_id}.lab",
        os="Linux",
        python_version="3.11",
        memory_gb=31.9,
        gpus=[GpuInfo(index=0, vendor="nvidia", name="H100", memory_gb=80, compute_capability=9.0)],
        tags=tags or {},
    )
    record = WorkerRecord(worker_id, caps.hostname, T0, T0, status, caps, slots=2)
    connected = status in (WorkerStatus.CONNECTED, WorkerStatus.DRAINING)
    return WorkerSnapshot(record, connected, draining, running)


def task(status: TaskStatus = TaskStatus.QUEUED, **changes: object) -> TaskRecord:
    spec = TaskSpec(task_id="task-1", type=TaskType.SIMULATED, priority=5)
    record = TaskRecord(spec=spec, status=status, create_time=T0, queued_at=T0)
    return replace(record, **changes)  # type: ignore[arg-type]


def test_fleet_states_split_connected_workers_by_what_they_do() -> None:
    assert fleet_state(snapshot("a")) is FleetState.IDLE
    assert fleet_state(snapshot("a", running=1)) is FleetState.BUSY
    assert fleet_state(snapshot("a", running=1, draining=True)) is FleetState.DRAINING
    assert fleet_state(snapshot("a", WorkerStatus.LOST)) is FleetState.LOST
    assert fleet_state(snapshot("a", WorkerStatus.DISCONNECTED)) is FleetState.DISCONNECTED
    assert fleet_state(snapshot("a", WorkerStatus.REVOKED)) is FleetState.REVOKED


def test_overview_counts_and_slots_of_connected_workers_only() -> None:
    workers = [snapshot("a"), snapshot("b", running=2), snapshot("c", WorkerStatus.LOST)]
    levels = [PriorityLevel(1, 3, T0)]
    shown = overview(workers, levels, 2, {"needs cuda": 1}, T0)
    assert shown.fleet[FleetState.IDLE] == 1
    assert shown.fleet[FleetState.BUSY] == 1
    assert shown.fleet[FleetState.LOST] == 1
    assert (shown.running, shown.slots, shown.delayed) == (2, 4, 2)


def test_worker_rows_show_hardware_and_filters_keep_what_they_name() -> None:
    row = worker_row(snapshot("gpu-1", running=1, tags={"rack": "b"}), 15.0)
    assert row.gpus == ["H100 80 GB cc 9"]
    assert row.heartbeat_timeout == 15.0
    assert WorkerFilter(state=FleetState.BUSY).keeps(row)
    assert not WorkerFilter(state=FleetState.IDLE).keeps(row)
    assert WorkerFilter(tag="rack=b").keeps(row)
    assert not WorkerFilter(tag="rack=a").keeps(row)
    assert WorkerFilter(q="gpu").keeps(row)
    assert not WorkerFilter(hardware="rocm").keeps(row)
    assert WorkerFilter(state=FleetState.BUSY, q="x").query() == {"state": "busy", "q": "x"}


def test_why_a_task_waits() -> None:
    now = T0 + 100
    assert wait_reason(task(TaskStatus.RUNNING), None, now) is None
    unschedulable = wait_reason(task(unschedulable_reason="needs 2 GPUs"), None, now)
    assert unschedulable is not None
    assert unschedulable.summary == "no connected worker can run it"
    assert "needs 2 GPUs" in unschedulable.details
    delayed = wait_reason(task(not_before=now + 30), None, now)
    assert delayed is not None
    assert "retry delay" in delayed.summary
    behind = wait_reason(task(), QueuedPlace(priority=5, ahead=3, level_size=10), now)
    assert behind is not None
    assert behind.summary == "every worker that can run it is busy"
    assert behind.details[0].startswith("position 4 of 10 at priority 5")


def test_task_rows_say_wait_and_duration_once_known() -> None:
    queued = task_row(task(unschedulable_reason="x"))
    assert queued.status is ShownStatus.UNSCHEDULABLE
    assert queued.wait_seconds is None
    assert queued.duration_seconds is None
    done = task_row(task(TaskStatus.COMPLETED, start_time=T0 + 4, end_time=T0 + 10))
    assert (done.wait_seconds, done.duration_seconds) == (4, 6)


def test_failure_rate_counts_finished_tasks_but_cancelled_ones() -> None:
    assert failure_rate([task()]) is None
    tasks = [
        task(TaskStatus.COMPLETED),
        task(TaskStatus.FAILED),
        task(TaskStatus.TIMED_OUT),
        task(TaskStatus.CANCELLED),
    ]
    assert failure_rate(tasks) == pytest.approx(2 / 3)


def test_chart_points_are_per_minute_rates() -> None:
    assert chart_point(T0, 10, 5, 4) == {"t": T0, "throughput": 30.0, "pass_rate": 80.0}
    assert chart_point(T0, 10, 0, 0) == {"t": T0, "throughput": 0.0, "pass_rate": None}
    assert chart_point(T0, 0, 1, 1) is None
    sql = history_sql(T0)
    assert f"make_timestamp({int((T0 - 3600) * 1_000_000)})" in sql
