"""Requirement fallbacks in the coordinator state: the slice in force is what the scheduler
sees, it moves on at its expiry, the attempt records it, and a task is unschedulable only
when no slice can run. Fake clock, real scheduler, no sockets."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from test_coordinator_state import SETTINGS, Harness, assigned, result, spec

from testfleet.coordinator.events import Tick, WorkerConnected, WorkerFrame
from testfleet.coordinator.state import CoordinatorState
from testfleet.coordinator.turn_output import Effects
from testfleet.domain.enums import HardwareKind, ResultStatus, TaskStatus, TaskType
from testfleet.domain.hardware import GpuInfo, WorkerCapabilities
from testfleet.domain.records import RecoveredState, TaskRecord
from testfleet.protocol.messages import PROTOCOL_VERSION, AttemptResult, Hello, Result

#: Slices expire after minutes; the workers must outlive them without heartbeats.
PATIENT = replace(SETTINGS, heartbeat_timeout_seconds=1e6)
H200 = {"hardware": ["cuda"], "gpu_model": "H200"}
ANY_CUDA = {"hardware": ["cuda"]}


def gpu_caps(name: str | None) -> WorkerCapabilities:
    gpus = (
        [GpuInfo(index=0, vendor="nvidia", name=name, memory_gb=80, compute_capability=9.0)]
        if name
        else []
    )
    return WorkerCapabilities(
        hostname="host",
        os="Linux",
        python_version="3.11",
        memory_gb=64,
        gpus=gpus,
        hardware=[HardwareKind.CPU, HardwareKind.CUDA] if name else [HardwareKind.CPU],
        task_types=[TaskType.SIMULATED],
    )


def connect(h: Harness, connection: int, worker_id: str, gpu: str | None) -> Any:
    hello = Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id=worker_id,
        session_key="s" * 16,
        capabilities=gpu_caps(gpu),
        slots=1,
    )
    return h.turn(WorkerConnected(connection, hello))


def prefer_h200(task_id: str, after: float = 600.0, **fields: Any) -> Any:
    return spec(
        task_id,
        requirements=H200,
        fallbacks=[{"after_seconds": after, "requirements": ANY_CUDA}],
        **fields,
    )


def submit_and_effects(h: Harness, *specs: Any) -> Effects:
    h.submit(*specs)
    return h.effects[-1]


def test_a_task_waits_for_its_busy_h200_then_falls_back_to_any_cuda_gpu() -> None:
    h = Harness(PATIENT)
    connect(h, 1, "h200", "NVIDIA H200")
    connect(h, 2, "h100", "NVIDIA H100")
    # The H200 is busy with an earlier task that wants it.
    first = assigned(submit_and_effects(h, spec("busy", requirements=H200)))
    assert first["busy"][0] == 1
    h.submit(prefer_h200("wants-h200"))
    task = h.task("wants-h200")
    assert task.status is TaskStatus.QUEUED
    assert task.slice_index == 0
    assert task.unschedulable_reason is None  # waiting for a busy H200 is not unschedulable

    h.clock.advance(599.0)
    effects = h.turn(Tick())
    assert "wants-h200" not in assigned(effects)  # the idle H100 is not taken yet

    h.clock.advance(1.0)
    effects = h.turn(Tick())
    placed = assigned(effects)
    assert placed["wants-h200"][0] == 2  # fell back to the H100
    attempt = h.state.open_attempts[placed["wants-h200"][1]]
    assert attempt.slice_index == 1
    assert h.task("wants-h200").slice_index == 1
    rows = [a for a in effects.batch.attempts if a.task_id == "wants-h200"]
    assert rows[0].slice_index == 1  # written with the attempt's row


def test_a_free_h200_is_used_before_the_fallback_and_records_slice_zero() -> None:
    h = Harness(PATIENT)
    connect(h, 2, "h100", "NVIDIA H100")
    connect(h, 1, "h200", "NVIDIA H200")
    effects = submit_and_effects(h, prefer_h200("t"))
    connection, attempt_id = assigned(effects)["t"]
    assert connection == 1
    assert h.state.open_attempts[attempt_id].slice_index == 0


def test_unschedulable_only_when_no_slice_can_run_and_the_reason_names_every_slice() -> None:
    h = Harness(PATIENT)
    connect(h, 1, "cpu", None)
    h.submit(prefer_h200("t"))
    reason = h.task("t").unschedulable_reason
    assert reason is not None
    assert reason.startswith("no requirement slice can run here: the slice in force: ")
    assert "later slice 1: hardware: needs one of [cuda]" in reason

    # An H100 joins: the fallback could run it, so the task is waiting, not stuck.
    connect(h, 2, "h100", "NVIDIA H100")
    assert h.task("t").unschedulable_reason is None
    assert h.task("t").status is TaskStatus.QUEUED
    h.clock.advance(600.0)
    assert assigned(h.turn(Tick()))["t"][0] == 2


def test_a_task_without_fallbacks_is_unschedulable_as_before() -> None:
    h = Harness(PATIENT)
    connect(h, 1, "h100", "NVIDIA H100")
    h.submit(spec("t", requirements=H200))
    reason = h.task("t").unschedulable_reason
    assert reason is not None
    assert reason.startswith("gpu_model: needs a GPU whose name contains 'H200'")


def test_slices_expire_in_place_keeping_the_tasks_age_and_order() -> None:
    h = Harness(PATIENT)
    connect(h, 1, "cpu", None)
    h.submit(prefer_h200("old", after=10.0))
    submitted = h.clock.now()
    h.clock.advance(1.0)
    h.submit(spec("young", requirements=ANY_CUDA))
    h.clock.advance(10.0)
    h.turn(Tick())
    assert h.task("old").slice_index == 1
    assert h.task("old").queued_at == submitted
    connect(h, 2, "h100", "NVIDIA H100")
    # Both now need any CUDA GPU; the older task goes first.
    assert h.task("old").status is TaskStatus.ASSIGNED
    assert h.task("young").status is TaskStatus.QUEUED


def test_a_retry_after_the_fallback_does_not_go_back_to_the_first_slice() -> None:
    h = Harness(PATIENT)
    connect(h, 2, "h100", "NVIDIA H100")
    h.submit(prefer_h200("t", after=5.0, retry_policy={"max_retries": 1}))
    h.clock.advance(5.0)
    connection, attempt_id = assigned(h.turn(Tick()))["t"]
    item = AttemptResult(attempt_id=attempt_id, result=result("t", "h100", ResultStatus.FAILED))
    effects = h.turn(WorkerFrame(connection, Result(results=[item])))
    # Retried at once on the same slice: the H100 takes it again.
    again = assigned(effects)
    assert again["t"][0] == 2
    assert h.state.open_attempts[again["t"][1]].slice_index == 1


def test_recovery_requeues_a_task_under_the_slice_in_force_after_the_restart() -> None:
    task_spec = prefer_h200("t", after=60.0)
    record = TaskRecord(spec=task_spec, status=TaskStatus.QUEUED, create_time=0.0, queued_at=0.0)
    recovered = RecoveredState(open_tasks=[record], open_attempts=[], workers=[], next_attempt_id=1)
    state = CoordinatorState(SETTINGS, 100.0, recovered=recovered)
    assert state.queue.slice_of("t") == 1
    assert state.tasks["t"].slice_index == 1
    written = state.take_effects().batch.tasks
    assert [(t.task_id, t.slice_index) for t in written] == [("t", 1)]
