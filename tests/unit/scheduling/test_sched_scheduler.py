"""schedule(): order, best-fit placement, slots, draining, unschedulable keys, determinism."""

from __future__ import annotations

import random

from sched_builders import cpu_caps, cuda_caps, placed, task, view, worker

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.task import Requirements
from testfleet.scheduling.scheduler import schedule
from testfleet.scheduling.view import SchedulingDecisions, SchedulingView, WorkerView

CUDA = [HardwareKind.CUDA]


def order_of(tasks_view: SchedulingView) -> list[str]:
    """Task ids in placement order (with one worker, that is the order tasks were taken in)."""
    decisions = schedule(tasks_view)
    return [p.task_id for p in decisions.placements]


def one_worker_with(slots: int) -> list[WorkerView]:
    return [worker("w", cpu_caps(), free_slots=slots)]


# --- order ------------------------------------------------------------------------------------


def test_lower_priority_number_goes_first() -> None:
    tasks = [task("low", priority=9), task("high", priority=1), task("mid", priority=5)]
    assert order_of(view(tasks, one_worker_with(3))) == ["high", "mid", "low"]


def test_only_as_many_as_there_are_slots_in_priority_order() -> None:
    tasks = [task("low", priority=9), task("high", priority=1), task("mid", priority=5)]
    assert order_of(view(tasks, one_worker_with(1))) == ["high"]


def test_older_first_within_a_priority() -> None:
    tasks = [task("new", queued_at=30.0), task("old", queued_at=10.0), task("mid", queued_at=20.0)]
    assert order_of(view(tasks, one_worker_with(3), now=30.0)) == ["old", "mid", "new"]


def test_task_id_breaks_exact_ties() -> None:
    tasks = [task("b", priority=3, queued_at=5.0), task("a", priority=3, queued_at=5.0)]
    assert order_of(view(tasks, one_worker_with(1), now=5.0)) == ["a"]


def test_aging_lets_an_old_low_priority_task_overtake_at_the_right_time() -> None:
    # "old" has priority 5 and has waited since t=0; "fresh" has priority 3 and is
    # submitted at ``now``. With aging_seconds=60, two levels take 120 s of waiting.
    def first_at(now: float) -> str:
        tasks = [task("old", priority=5, queued_at=0.0), task("fresh", priority=3, queued_at=now)]
        return order_of(view(tasks, one_worker_with(1), now=now, aging_seconds=60.0))[0]

    assert first_at(60.0) == "fresh"
    assert first_at(119.0) == "fresh"
    assert first_at(120.0) == "old"  # equal effective priority: the older one wins
    assert first_at(121.0) == "old"


def test_aging_across_many_levels_keeps_merge_order() -> None:
    tasks = [
        task("p9-ancient", priority=9, queued_at=0.0),
        task("p1-now", priority=1, queued_at=1000.0),
        task("p5-mid", priority=5, queued_at=700.0),
        task("p5-new", priority=5, queued_at=990.0),
    ]
    # effective at now=1000: p9-ancient 9-1000/100=-1, p1-now 1, p5-mid 2, p5-new 4.9
    order = order_of(view(tasks, one_worker_with(4), now=1000.0, aging_seconds=100.0))
    assert order == ["p9-ancient", "p1-now", "p5-mid", "p5-new"]


# --- placement --------------------------------------------------------------------------------


def test_best_fit_keeps_the_gpu_free_for_gpu_work() -> None:
    workers = [worker("h200", cuda_caps(), 1), worker("cpu", cpu_caps(), 1)]
    tasks = [task("cpu-test", priority=1), task("cuda-bench", priority=2, hardware=CUDA)]
    assert placed(schedule(view(tasks, workers)).placements) == {
        "cpu-test": "cpu",
        "cuda-bench": "h200",
    }


def test_best_fit_prefers_the_smaller_gpu_that_fits() -> None:
    workers = [worker("h200", cuda_caps("H200", 141, 9.0)), worker("t4", cuda_caps("T4", 16, 7.5))]
    tasks = [task("small", hardware=CUDA), task("big", queued_at=1.0, min_gpu_memory_gb=40)]
    assert placed(schedule(view(tasks, workers, now=1.0)).placements) == {
        "small": "t4",
        "big": "h200",
    }


def test_cpu_task_uses_the_gpu_worker_when_it_is_the_only_free_one() -> None:
    workers = [worker("cpu", cpu_caps(), free_slots=0), worker("h200", cuda_caps(), 1)]
    assert placed(schedule(view([task("t")], workers)).placements) == {"t": "h200"}


def test_equal_workers_are_used_in_worker_id_order() -> None:
    workers = [worker("w2"), worker("w1"), worker("w3")]
    tasks = [task("a", queued_at=0.0), task("b", queued_at=1.0)]
    assert placed(schedule(view(tasks, workers, now=1.0)).placements) == {"a": "w1", "b": "w2"}


def test_free_slots_are_respected_across_placements() -> None:
    workers = [worker("a", free_slots=2), worker("b", free_slots=1), worker("c", free_slots=0)]
    tasks = [task(f"t{i}", queued_at=float(i)) for i in range(10)]
    decisions = schedule(view(tasks, workers, now=10.0))
    per_worker: dict[str, int] = {}
    for p in decisions.placements:
        per_worker[p.worker_id] = per_worker.get(p.worker_id, 0) + 1
    assert per_worker == {"a": 2, "b": 1}
    assert [p.task_id for p in decisions.placements] == ["t0", "t1", "t2"]


def test_no_free_slots_means_no_placements_but_still_unschedulable_reasons() -> None:
    tasks = [task("cpu"), task("gpu", hardware=CUDA)]
    decisions = schedule(view(tasks, [worker("w", free_slots=0)]))
    assert decisions.placements == []
    assert set(decisions.unschedulable.values()) == {
        "hardware: needs one of [cuda]; connected workers offer [cpu]"
    }


def test_draining_worker_gets_nothing_but_keeps_the_task_schedulable() -> None:
    workers = [worker("gpu", cuda_caps(), free_slots=4, accepting=False), worker("cpu")]
    tasks = [task("cuda", hardware=CUDA), task("cpu", queued_at=1.0)]
    decisions = schedule(view(tasks, workers, now=1.0))
    assert placed(decisions.placements) == {"cpu": "cpu"}
    assert decisions.unschedulable == {}


def test_waiting_cuda_task_does_not_block_cpu_tasks() -> None:
    workers = [worker("gpu", cuda_caps(), free_slots=0), worker("cpu", free_slots=2)]
    tasks = [
        task("cuda-1", priority=0, hardware=CUDA),
        task("cuda-2", priority=0, queued_at=1.0, hardware=CUDA),
        task("cpu-1", priority=9, queued_at=2.0),
        task("cpu-2", priority=9, queued_at=3.0),
    ]
    decisions = schedule(view(tasks, workers, now=3.0))
    assert placed(decisions.placements) == {"cpu-1": "cpu", "cpu-2": "cpu"}
    assert decisions.unschedulable == {}


def test_unschedulable_key_is_reported_and_others_still_placed() -> None:
    gpu_task = task("cuda", priority=0, hardware=CUDA)
    decisions = schedule(view([gpu_task, task("cpu", priority=5)], [worker("cpu")]))
    assert placed(decisions.placements) == {"cpu": "cpu"}
    assert decisions.unschedulable == {
        gpu_task.match_key: "hardware: needs one of [cuda]; connected workers offer [cpu]"
    }


def test_no_workers_at_all() -> None:
    t = task("t", task_type=TaskType.COMMAND)
    decisions = schedule(view([t], []))
    assert decisions == SchedulingDecisions(
        placements=[], unschedulable={t.match_key: "no workers are connected"}
    )


def test_tasks_with_keys_missing_from_pending_keys_are_still_placed() -> None:
    # pending_keys only saves work; a key missing from it is matched like any other.
    gpu_task, cpu_task = task("cuda", priority=0, hardware=CUDA), task("cpu", priority=5)
    full = view([gpu_task, cpu_task], [worker("cpu")])
    partial = SchedulingView(
        now=full.now,
        pending_by_priority=full.pending_by_priority,
        workers=full.workers,
        pending_keys={gpu_task.match_key: (gpu_task.task_type, gpu_task.requirements)},
    )
    assert placed(schedule(partial).placements) == {"cpu": "cpu"}
    assert placed(
        schedule(view([gpu_task, cpu_task], [worker("cpu")], with_pending_keys=False)).placements
    ) == {"cpu": "cpu"}


def test_a_task_listed_twice_is_placed_once() -> None:
    t = task("dup")
    duplicated = SchedulingView(
        now=0.0, pending_by_priority={5: [t, t]}, workers=[worker("w", free_slots=2)]
    )
    assert [p.task_id for p in schedule(duplicated).placements] == ["dup"]


def test_non_positive_aging_means_plain_priority_order() -> None:
    tasks = [
        task("old-low", priority=9, queued_at=0.0),
        task("new-high", priority=1, queued_at=1e6),
    ]
    assert order_of(view(tasks, one_worker_with(1), now=1e6, aging_seconds=0.0)) == ["new-high"]


# --- determinism ------------------------------------------------------------------------------


def mixed_view(worker_order_seed: int | None = None) -> SchedulingView:
    workers = [
        worker("cpu-a", cpu_caps(memory_gb=16), 2),
        worker("cpu-b", cpu_caps(memory_gb=16), 2),
        worker("cpu-big", cpu_caps(memory_gb=256), 1),
        worker("t4", cuda_caps("T4", 16, 7.5), 1),
        worker("h200", cuda_caps(), 2),
        worker("drain", cuda_caps(), 3, accepting=False),
    ]
    if worker_order_seed is not None:
        random.Random(worker_order_seed).shuffle(workers)
    tasks = [
        task(f"t{i}", priority=i % 4, queued_at=float(i), requirements=reqs)
        for i, reqs in enumerate(
            [
                Requirements(),
                Requirements(hardware=CUDA),
                Requirements(min_memory_gb=100),
                Requirements(min_cuda_compute=8.0),
                Requirements(gpu_model="A100"),
            ]
            * 4
        )
    ]
    return view(tasks, workers, now=20.0, aging_seconds=5.0)


def test_same_view_twice_gives_equal_decisions() -> None:
    first = schedule(mixed_view())
    assert first == schedule(mixed_view())
    assert len(first.placements) == 8
    assert len(first.unschedulable) == 1


def test_worker_order_does_not_matter() -> None:
    expected = schedule(mixed_view())
    for seed in range(20):
        assert schedule(mixed_view(worker_order_seed=seed)) == expected


def test_excluded_workers_are_passed_over_for_the_next_fit() -> None:
    # w1 ranks first (least capable) but the task excludes it.
    tasks = [task("rerun", exclude_workers=["w1"]), task("plain")]
    workers = [worker("w1", cpu_caps()), worker("w2", cuda_caps())]
    decisions = schedule(view(tasks, workers))
    assert placed(decisions.placements) == {"rerun": "w2", "plain": "w1"}
    assert decisions.unschedulable == {}


def test_a_task_excluding_every_connected_worker_is_unschedulable_and_says_so() -> None:
    only = task("rerun", exclude_workers=["w1"])
    decisions = schedule(view([only], [worker("w1")]))
    assert decisions.placements == []
    assert decisions.unschedulable == {
        only.match_key: "exclude_workers: every connected worker is excluded ([w1])"
    }
