"""The coordinator keeps what each worker's open attempts reserve, and frees it when they end."""

from __future__ import annotations

from test_coordinator_state import Harness, assigned, result, spec

from testfleet.coordinator.events import WorkerFrame
from testfleet.domain.enums import TaskStatus
from testfleet.domain.resources import ResourceAmounts
from testfleet.domain.task import TaskSpec
from testfleet.protocol.messages import Accept, AttemptResult, Result

GIB = 1024**3


def big(task_id: str, gib: int) -> TaskSpec:
    return spec(task_id, requirements={"resources": {"memory_bytes": f"{gib}GiB"}})


def test_reservations_hold_a_worker_until_attempts_end() -> None:
    h = Harness()
    h.submit(*(big(f"t{i}", 30) for i in range(3)))
    # 4 slots, but its 64 GiB hold two 30 GiB tasks.
    first = assigned(h.connect(1, "w1", slots=4))
    assert sorted(first) == ["t0", "t1"]
    worker = h.state.workers["w1"]
    assert worker.reserved == ResourceAmounts(memory_bytes=60 * GIB)
    assert h.task("t2").status is TaskStatus.QUEUED
    assert h.task("t2").unschedulable_reason is None  # waiting, not unschedulable

    _, attempt_id = first["t0"]
    h.turn(WorkerFrame(1, Accept(attempt_ids=[attempt_id])))
    done = Result(results=[AttemptResult(attempt_id=attempt_id, result=result("t0", "w1"))])
    then = assigned(h.turn(WorkerFrame(1, done)))
    assert list(then) == ["t2"]
    assert worker.reserved == ResourceAmounts(memory_bytes=60 * GIB)


def test_a_task_bigger_than_every_worker_says_which_resource() -> None:
    h = Harness()
    h.submit(big("huge", 100))
    h.connect(1, "w1", slots=4)
    assert h.task("huge").unschedulable_reason == (
        "resources: needs 100 GiB memory; the largest worker offers 64 GiB"
    )
