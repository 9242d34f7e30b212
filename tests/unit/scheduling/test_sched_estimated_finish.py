"""Placement by estimated finish (scheduling/estimated_finish.py): today's decisions
without history; with it, the fastest worker of the least capable tier, and a more
capable tier only when it pays and nothing needs it."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from sched_builders import cpu_caps, cuda_caps, placed, task, view, worker
from test_sched_properties import random_view

from testfleet.domain.enums import HardwareKind
from testfleet.scheduling.estimated_finish import estimated_finish, estimated_finish_policy
from testfleet.scheduling.scheduler import schedule

CPU = HardwareKind.CPU
CUDA = HardwareKind.CUDA
MIXED = "simulated|mixed"  # a job a GPU speeds up 8x but does not need


@pytest.mark.parametrize("block", range(4))
def test_without_history_it_decides_exactly_as_best_fit(block: int) -> None:
    for seed in range(block, 400, 4):
        v = random_view(random.Random(seed))
        assert estimated_finish(v) == schedule(v), f"seed {seed}"
        # Every factor 1.0 (measured, but typical): the policy's own search,
        # not its shortcut to best fit, must give the same decisions too.
        ones = replace(v, speed_factors={w.worker_id: 1.0 for w in v.workers} or {"x": 1.0})
        assert estimated_finish(ones) == schedule(ones), f"seed {seed} (factors 1.0)"


def test_the_fastest_worker_of_the_tier_gets_the_task() -> None:
    workers = [worker("cpu-a", cpu_caps()), worker("cpu-b", cpu_caps())]
    v = view([task("t1")], workers)
    assert placed(schedule(v).placements) == {"t1": "cpu-a"}
    fast_b = replace(v, speed_factors={"cpu-a": 0.5, "cpu-b": 2.0})
    assert placed(estimated_finish(fast_b).placements) == {"t1": "cpu-b"}


def test_a_job_the_gpu_runs_much_faster_goes_there_when_gpu_slots_are_to_spare() -> None:
    workers = [worker("cpu-a", cpu_caps()), worker("gpu-a", cuda_caps(), free_slots=2)]
    t = replace(task("t1"), work_key=MIXED)
    v = replace(view([t], workers), typical_seconds={MIXED: {CPU: 120.0, CUDA: 15.0}})
    assert placed(schedule(v).placements) == {"t1": "cpu-a"}
    assert placed(estimated_finish(v).placements) == {"t1": "gpu-a"}
    # Makespan of this one-task trace: 120 s by best fit, 15 s by estimated finish.


def test_it_never_takes_the_only_gpu_slot() -> None:
    workers = [worker("cpu-a", cpu_caps()), worker("h200", cuda_caps(), free_slots=1)]
    t = replace(task("t1"), work_key=MIXED)
    v = replace(view([t], workers), typical_seconds={MIXED: {CPU: 120.0, CUDA: 15.0}})
    assert placed(estimated_finish(v).placements) == {"t1": "cpu-a"}


def test_waiting_gpu_work_keeps_the_gpu() -> None:
    workers = [worker("cpu-a", cpu_caps()), worker("h200", cuda_caps(), free_slots=2)]
    mixed = replace(task("t1", queued_at=0.0), work_key=MIXED)
    gpu_job = task("t2", queued_at=1.0, hardware=[CUDA])
    v = replace(view([mixed, gpu_job], workers), typical_seconds={MIXED: {CPU: 120.0, CUDA: 15.0}})
    # The GPU job takes one GPU slot; the other is the reserve: the mixed job stays on CPU.
    assert placed(estimated_finish(v).placements) == {"t1": "cpu-a", "t2": "h200"}


def test_a_small_gain_does_not_move_work_up_a_tier() -> None:
    workers = [worker("cpu-a", cpu_caps()), worker("gpu-a", cuda_caps(), free_slots=4)]
    t = replace(task("t1"), work_key="simulated|cpu-test")
    v = replace(view([t], workers), typical_seconds={"simulated|cpu-test": {CPU: 20.0, CUDA: 18.0}})
    assert placed(estimated_finish(v).placements) == {"t1": "cpu-a"}


def test_slots_freed_by_a_move_go_to_the_tasks_still_waiting() -> None:
    workers = [worker("cpu-a", cpu_caps()), worker("gpu-a", cuda_caps(), free_slots=3)]
    mixed = replace(task("t1", queued_at=0.0), work_key=MIXED)
    # Younger, and may not run on the GPU worker: it waits for cpu-a.
    cpu_only = task("t2", queued_at=1.0, exclude_workers=["gpu-a"])
    v = replace(view([mixed, cpu_only], workers), typical_seconds={MIXED: {CPU: 120.0, CUDA: 15.0}})
    assert placed(schedule(v).placements) == {"t1": "cpu-a"}
    # t1 moves to the GPU (2 of its 3 slots stay free), and t2 gets the CPU slot.
    assert placed(estimated_finish(v).placements) == {"t1": "gpu-a", "t2": "cpu-a"}


@pytest.mark.parametrize(("ratio", "reserve"), [(0.0, 1), (1.5, 1), (0.5, -1)])
def test_bad_knobs_are_refused_by_name(ratio: float, reserve: int) -> None:
    with pytest.raises(ValueError, match="climb_ratio" if reserve >= 0 else "reserve_slots"):
        estimated_finish_policy(ratio, reserve)
