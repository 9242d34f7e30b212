"""Resources beside slots: a task goes only where a slot *and* its reservation are free,
and a task bigger than every worker is unschedulable with the short resource named."""

from __future__ import annotations

from dataclasses import replace

from sched_builders import caps, placed, task, view, worker

from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.resources import MemoryEnforcement, ResourceAmounts, WorkerResources
from testfleet.domain.task import Requirements
from testfleet.scheduling.matching import allocatable, unmet_requirement
from testfleet.scheduling.scheduler import schedule

GIB = 1024**3


def sized(memory_gib: int = 0, cores: int = 0, disk_gib: int = 0) -> Requirements:
    return Requirements.model_validate(
        {
            "resources": {
                k: v
                for k, v in {
                    "memory_bytes": memory_gib * GIB,
                    "cpu_cores": cores,
                    "disk_bytes": disk_gib * GIB,
                }.items()
                if v
            }
        }
    )


def limited(memory_gib: int = 8, cores: int = 4, disk_gib: int = 100) -> WorkerCapabilities:
    return caps().model_copy(
        update={
            "resources": WorkerResources(
                memory_bytes=memory_gib * GIB,
                cpu_cores=cores,
                disk_bytes=disk_gib * GIB,
                memory_enforcement=MemoryEnforcement.CGROUP_V1,
            )
        }
    )


def test_slots_alone_no_longer_decide_memory_does() -> None:
    tasks = [task(f"t{i}", queued_at=i, requirements=sized(memory_gib=3)) for i in range(3)]
    decisions = schedule(view(tasks, [worker("w", limited(memory_gib=8), free_slots=3)]))
    # 3 slots but 8 GiB: two 3 GiB tasks fit, the third waits (it is not unschedulable).
    assert placed(decisions.placements) == {"t0": "w", "t1": "w"}
    assert decisions.unschedulable == {}


def test_what_running_attempts_reserve_is_not_free() -> None:
    busy = replace(worker("w", limited(cores=4), free_slots=3), reserved=ResourceAmounts(0, 3, 0))
    tasks = [task("a", requirements=sized(cores=2)), task("b", queued_at=1)]
    decisions = schedule(view(tasks, [busy]))
    # 'a' needs 2 cores, 1 is free; 'b' reserves nothing and still gets a slot.
    assert placed(decisions.placements) == {"b": "w"}


def test_a_task_goes_to_the_worker_with_room_even_if_less_preferred() -> None:
    small = worker("small", limited(memory_gib=2), free_slots=4)
    big = worker("big", limited(memory_gib=64), free_slots=4)
    decisions = schedule(view([task("t", requirements=sized(memory_gib=4))], [small, big]))
    assert placed(decisions.placements) == {"t": "big"}


def test_tasks_without_resources_are_placed_as_before() -> None:
    decisions = schedule(view([task("t")], [worker("w", limited(memory_gib=1, cores=1))]))
    assert placed(decisions.placements) == {"t": "w"}


def test_too_big_for_every_worker_names_the_resource_and_the_largest_offer() -> None:
    workers = [worker("a", limited(memory_gib=31)), worker("b", limited(memory_gib=16))]
    decisions = schedule(view([task("t", requirements=sized(memory_gib=64))], workers))
    assert list(decisions.unschedulable.values()) == [
        "resources: needs 64 GiB memory; the largest worker offers 31 GiB"
    ]
    assert decisions.placements == []


def test_cores_and_disk_are_named_too() -> None:
    decisions = schedule(
        view([task("t", requirements=sized(cores=16, disk_gib=500))], [worker("a", limited())])
    )
    (reason,) = decisions.unschedulable.values()
    assert "needs 16 CPU cores; the largest worker offers 4" in reason
    assert "needs 500 GiB disk; the largest worker offers 100 GiB" in reason


def test_one_workers_miss_is_explained() -> None:
    reason = unmet_requirement(task("t").task_type, sized(memory_gib=64), limited(memory_gib=8))
    assert reason == "resources: needs 64 GiB memory, worker offers 8 GiB"


def test_an_older_worker_is_judged_by_its_memory_and_cores_and_unbounded_disk() -> None:
    old = caps(memory_gb=16.0, cores=8)
    assert old.resources is None
    totals = allocatable(old)
    assert (totals.memory_bytes, totals.cpu_cores) == (16 * GIB, 8)
    fits = schedule(
        view([task("t", requirements=sized(memory_gib=8, disk_gib=900))], [worker("w", old)])
    )
    assert placed(fits.placements) == {"t": "w"}
    too_big = schedule(view([task("t", requirements=sized(cores=9))], [worker("w", old)]))
    assert list(too_big.unschedulable.values()) == [
        "resources: needs 9 CPU cores; the largest worker offers 8"
    ]
