"""schedule() given the coordinator's standing ranking decides as it does when it ranks itself.

The coordinator passes ``SchedulingView.ranked_workers`` (kept by
``WorkerRegistry.ranked``) so the scheduler need not sort every worker every
turn; and workers of one kind share one capabilities object, which the
scheduler tests once per key. Neither may change a decision.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from sched_builders import cpu_caps, cuda_caps, task, view, worker
from test_sched_properties import SEEDS, random_view, reference_schedule

from testfleet.scheduling.matching import capability_rank
from testfleet.scheduling.scheduler import schedule
from testfleet.scheduling.view import Placement, SchedulingView, WorkerView


def ranked(workers: list[WorkerView]) -> list[WorkerView]:
    return sorted(
        (w for w in workers if w.accepting and w.free_slots > 0),
        key=lambda w: (capability_rank(w.capabilities), w.worker_id),
    )


def sharing_capabilities(v: SchedulingView, rng: random.Random) -> SchedulingView:
    """``v`` with some workers given another worker's capabilities object (as a
    fleet of equal machines has), so the per-key verdict cache is exercised."""
    workers = list(v.workers)
    for index in range(len(workers)):
        if workers and rng.random() < 0.5:
            donor = rng.choice(workers)
            workers[index] = replace(workers[index], capabilities=donor.capabilities)
    return replace(v, workers=workers)


@pytest.mark.parametrize("block", range(2))
def test_a_given_ranking_gives_the_same_decisions(block: int) -> None:
    for seed in SEEDS[block::2]:
        rng = random.Random(seed)
        v = sharing_capabilities(random_view(rng), rng)
        given = replace(v, ranked_workers=ranked(list(v.workers)))
        decided = schedule(given)
        assert decided == schedule(v), f"seed {seed}"
        assert decided.placements == reference_schedule(v), f"seed {seed}"


def test_the_ranking_given_is_what_the_scheduler_searches() -> None:
    # The scheduler trusts the coordinator's ranking (that is what spares it
    # the sort), so keeping it right is the registry's job: tests/unit/
    # coordinator/test_worker_registry_views.py checks that it does. Here a
    # ranking with the GPU box first sends a CPU task there, which proves the
    # given order, not a sort of view.workers, is what was searched.
    cpu_box, gpu_box = worker("cpu-1", cpu_caps()), worker("gpu-1", cuda_caps())
    v = view([task("t1")], [cpu_box, gpu_box])
    assert schedule(v).placements == [Placement("t1", "cpu-1")]
    assert schedule(replace(v, ranked_workers=[cpu_box, gpu_box])).placements == [
        Placement("t1", "cpu-1")
    ]
    assert schedule(replace(v, ranked_workers=[gpu_box, cpu_box])).placements == [
        Placement("t1", "gpu-1")
    ]
    # An empty ranking means no worker has a free slot: nothing is placed.
    assert schedule(replace(v, ranked_workers=[])).placements == []
