"""Random views (seeded): schedule() keeps its invariants and agrees with a naive reference.

The reference sorts the whole queue and scans every worker for every task:
too slow for the coordinator, simple enough to trust.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from sched_builders import caps, gpu, task, view, worker

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.resources import ResourceAmounts
from testfleet.domain.task import Requirements
from testfleet.scheduling.matching import allocatable, capability_rank, unmet_requirement
from testfleet.scheduling.scheduler import schedule
from testfleet.scheduling.view import PendingTask, Placement, SchedulingView, WorkerView

REQUIREMENT_POOL = [
    Requirements(),
    Requirements(hardware=[HardwareKind.CUDA]),
    Requirements(hardware=[HardwareKind.CUDA, HardwareKind.ROCM]),
    Requirements(min_memory_gb=32),
    Requirements(min_cuda_compute=8.0),
    Requirements(min_gpu_memory_gb=40),
    Requirements(gpu_model="h100"),
    Requirements(tags={"rack": "a"}),
    Requirements(hardware=[HardwareKind.CUDA], min_memory_gb=64, tags={"rack": "b"}),
    Requirements(hardware=[HardwareKind.MPS]),
    # Reservations: placed only where this much is still free beside a slot.
    Requirements.model_validate({"resources": {"memory_bytes": "12GiB"}}),
    Requirements.model_validate({"resources": {"cpu_cores": 6}}),
    Requirements.model_validate({"resources": {"memory_bytes": "40GiB", "cpu_cores": 2}}),
]
GIB = 1024**3
GPU_POOL = [("NVIDIA H100", 80.0, 9.0), ("Tesla T4", 16.0, 7.5), ("NVIDIA A100", 40.0, 8.0)]


def random_worker(rng: random.Random, n: int) -> WorkerView:
    gpus = [gpu(*rng.choice(GPU_POOL), index=i) for i in range(rng.choice([0, 0, 1, 2]))]
    hardware = [HardwareKind.CPU] + ([HardwareKind.CUDA] if gpus else [])
    if rng.random() < 0.1:
        hardware.append(HardwareKind.ROCM)
    worker_caps = caps(
        hardware=hardware,
        memory_gb=rng.choice([8.0, 16.0, 32.0, 64.0, 128.0]),
        cores=rng.choice([4, 8, 16]),
        gpus=gpus,
        task_types=rng.sample(list(TaskType), rng.randint(1, len(TaskType))),
        tags={"rack": rng.choice("ab")} if rng.random() < 0.7 else {},
    )
    view_of = worker(f"w{n:02d}", worker_caps, rng.randint(0, 3), accepting=rng.random() < 0.8)
    # What its running attempts already hold (never more than it has).
    held = ResourceAmounts(rng.choice([0, 4, 8]) * GIB, rng.choice([0, 0, 2, 4]), 0)
    return replace(
        view_of, reserved=held if held.fits_in(allocatable(worker_caps)) else held - held
    )


def random_view(rng: random.Random) -> SchedulingView:
    workers = [random_worker(rng, n) for n in range(rng.randint(0, 8))]
    now = 1000.0
    tasks = [
        task(
            f"t{n:03d}",
            priority=rng.randint(0, 4),
            # Coarse times so that ties in age happen and the task_id tiebreak is exercised.
            queued_at=float(rng.randrange(0, 1000, 50)),
            task_type=rng.choice([TaskType.SIMULATED, TaskType.COMMAND]),
            requirements=rng.choice(REQUIREMENT_POOL),
        )
        for n in range(rng.randint(0, 40))
    ]
    return view(
        tasks,
        workers,
        now=now,
        aging_seconds=rng.choice([50.0, 60.0, 200.0, 1e9, 0.0]),
        with_pending_keys=rng.random() < 0.8,
    )


def reference_schedule(v: SchedulingView) -> list[Placement]:
    """Sort everything, then give each task the least capable matching worker with a slot."""
    tasks = [t for level in v.pending_by_priority.values() for t in level]
    aging = v.aging_seconds

    def order(t: PendingTask) -> tuple[float, float, str]:
        effective = t.priority - (v.now - t.queued_at) / aging if aging > 0 else t.priority
        return (effective, t.queued_at, t.task_id)

    workers = sorted(
        (w for w in v.workers if w.accepting),
        key=lambda w: (capability_rank(w.capabilities), w.worker_id),
    )
    free = {w.worker_id: w.free_slots for w in workers}
    room = {w.worker_id: allocatable(w.capabilities) - w.reserved for w in workers}
    out: list[Placement] = []
    for t in sorted(tasks, key=order):
        needs = t.requirements.resources.amounts()
        for w in workers:
            if (
                free[w.worker_id] > 0
                and needs.fits_in(room[w.worker_id])
                and unmet_requirement(t.task_type, t.requirements, w.capabilities) is None
            ):
                free[w.worker_id] -= 1
                room[w.worker_id] -= needs
                out.append(Placement(t.task_id, w.worker_id))
                break
    return out


SEEDS = range(400)


@pytest.mark.parametrize("block", range(4))
def test_random_views_keep_invariants(block: int) -> None:
    for seed in SEEDS[block::4]:
        check_invariants(random_view(random.Random(seed)), f"seed {seed}")


def check_invariants(v: SchedulingView, label: str) -> None:
    decisions = schedule(v)
    workers = {w.worker_id: w for w in v.workers}
    tasks = {t.task_id: t for level in v.pending_by_priority.values() for t in level}

    # Every placement names a real task and an accepting worker that matches it.
    used: dict[str, int] = {}
    room = {w.worker_id: allocatable(w.capabilities) - w.reserved for w in v.workers}
    for p in decisions.placements:
        t, w = tasks[p.task_id], workers[p.worker_id]
        assert w.accepting, label
        assert unmet_requirement(t.task_type, t.requirements, w.capabilities) is None, label
        used[p.worker_id] = used.get(p.worker_id, 0) + 1
        room[p.worker_id] -= t.requirements.resources.amounts()
    # No worker past its free resources.
    assert all(ResourceAmounts().fits_in(left) for left in room.values()), label

    # No task twice; no worker past its free slots.
    placed_ids = [p.task_id for p in decisions.placements]
    assert len(placed_ids) == len(set(placed_ids)), label
    for worker_id, count in used.items():
        assert count <= workers[worker_id].free_slots, label

    # Nothing left waiting while a matching accepting worker still has a free slot.
    for t in tasks.values():
        if t.task_id in placed_ids:
            continue
        for w in v.workers:
            spare = w.free_slots - used.get(w.worker_id, 0)
            fits = unmet_requirement(
                t.task_type, t.requirements, w.capabilities
            ) is None and t.requirements.resources.amounts().fits_in(room[w.worker_id])
            assert not (w.accepting and spare > 0 and fits), (
                f"{label}: {t.task_id} on {w.worker_id}"
            )

    # Same decisions as the slow reference: order and best fit included.
    assert decisions.placements == reference_schedule(v), label

    # Unschedulable exactly when no connected worker, draining included, matches.
    for key, (task_type, requirements) in v.pending_keys.items():
        nobody = all(
            unmet_requirement(task_type, requirements, w.capabilities) is not None
            for w in v.workers
        )
        assert (key in decisions.unschedulable) == nobody, label
    assert set(decisions.unschedulable) <= set(v.pending_keys), label

    # Deterministic, whatever order the workers come in.
    shuffled = list(v.workers)
    random.Random(len(shuffled)).shuffle(shuffled)
    again = SchedulingView(
        now=v.now,
        pending_by_priority=v.pending_by_priority,
        workers=shuffled,
        pending_keys=v.pending_keys,
        aging_seconds=v.aging_seconds,
    )
    assert schedule(again) == decisions, label


def test_random_views_place_something_often_enough() -> None:
    # Guards the generator: the invariants above mean little if nothing is ever placed.
    placed = sum(len(schedule(random_view(random.Random(c))).placements) > 0 for c in SEEDS)
    unschedulable = sum(bool(schedule(random_view(random.Random(c))).unschedulable) for c in SEEDS)
    assert placed > len(SEEDS) // 2
    assert unschedulable > len(SEEDS) // 10
    # ...and resources are what kept some task waiting beside a free slot.
    waiting_for_room = 0
    for c in SEEDS:
        v = random_view(random.Random(c))
        placed_ids = {p.task_id for p in schedule(v).placements}
        waiting_for_room += any(
            t.task_id not in placed_ids and t.requirements.resources.declared
            for level in v.pending_by_priority.values()
            for t in level
        )
    assert waiting_for_room > len(SEEDS) // 10
