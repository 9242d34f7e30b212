"""Make a simulation trace from a seed: a mixed CPU/GPU fleet and mixed work.

Callers: ``benchmarks/simulate.py`` (when no ``--trace`` file is given) and
the simulator's unit tests. The same ``(workers, tasks, seed)`` always gives
the same trace (one :class:`random.Random` seeded with ``seed``, drawn in a
fixed order), so figures can be compared across policies and runs.

The fleet (proportions are expected values):

* 80% CPU workers: ``["cpu"]``, 2, 4 or 8 slots, speed uniform in 0.5-1.5
  (old and new machines side by side);
* 20% GPU workers: ``["cpu", "cuda"]``, 2 or 4 slots, speed uniform in 0.8-1.2.

The work, submitted in batches of 1-200 tasks (as ``testfleet submit`` and
``testfleet run`` send them) at Poisson arrival times:

* 75% CPU tests: no requirements; ~20 s on a CPU or a GPU worker;
* 10% GPU jobs: require ``cuda``; ~60 s;
* 15% mixed jobs: no requirements; ~120 s on a CPU worker, ~15 s on a GPU one
  (work that a GPU speeds up but does not need).

Durations are log-normal around those means (sigma 0.5). The arrival rate is
``load`` times what the fleet can finish per second on average, so with the
default ``load=1.0`` the queue grows and drains around the fleet's capacity.

With ``works=N`` (> 0) the tasks repeat N pieces of work, as a suite's tests
and a benchmark matrix do from run to run: each work has its kind and its
log-normal length drawn once, each task picks one (uniformly) and runs it
with a little noise of its own (sigma 0.1), and carries its name
(``TraceTask.work``), so the coordinator can measure worker speeds and
typical durations from the repeats (``scheduling/estimated_finish.py``). The
arrival times and batch sizes are the same as with ``works=0`` for the same
seed (the works are drawn from a second generator), and ``works=0`` gives
exactly the traces of before.
"""

from __future__ import annotations

import math
import random

from testfleet.domain.enums import HardwareKind
from testfleet.domain.task import Requirements
from testfleet.simulation.trace import Trace, TraceTask, TraceWorker

CPU = HardwareKind.CPU
CUDA = HardwareKind.CUDA

#: (share of tasks, requirements, mean seconds per hardware class).
_TASK_MIX: tuple[tuple[float, Requirements, dict[HardwareKind, float]], ...] = (
    (0.75, Requirements(), {CPU: 20.0, CUDA: 20.0}),
    (0.10, Requirements(hardware=[CUDA]), {CUDA: 60.0}),
    (0.15, Requirements(), {CPU: 120.0, CUDA: 15.0}),
)
_SIGMA = 0.5


#: The noise of one run of a repeated work around the work's own length.
_REPEAT_SIGMA = 0.1

_Work = tuple[str, Requirements, dict[HardwareKind, float]]


def generate_trace(workers: int, tasks: int, seed: int, load: float = 1.0, works: int = 0) -> Trace:
    """A trace of ``workers`` workers and ``tasks`` tasks (see the module docstring)."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if tasks < 0:
        raise ValueError("tasks must be 0 or more")
    if load <= 0:
        raise ValueError("load must be greater than 0")
    if works < 0:
        raise ValueError("works must be 0 or more")
    rng = random.Random(seed)
    work_rng = random.Random(f"works-{seed}")
    catalogue = [_work(work_rng, index) for index in range(works)]
    fleet = [_worker(rng, index) for index in range(workers)]
    rate = load * _capacity_per_second(fleet)
    made: list[TraceTask] = []
    now = 0.0
    while len(made) < tasks:
        batch = min(rng.randint(1, 200), tasks - len(made))
        for _ in range(batch):
            # Drawn either way, so the arrivals below are the same with works.
            drawn = _task(rng, len(made), now)
            made.append(_repeat(work_rng, catalogue, len(made), now) if catalogue else drawn)
        # The next batch comes after the time the fleet needs for this one.
        now += rng.expovariate(rate / batch)
    return Trace.of(fleet, made)


def _worker(rng: random.Random, index: int) -> TraceWorker:
    if rng.random() < 0.8:
        return TraceWorker(
            worker_id=f"cpu-{index}",
            hardware=[CPU],
            slots=rng.choice((2, 4, 8)),
            speed=round(rng.uniform(0.5, 1.5), 3),
        )
    return TraceWorker(
        worker_id=f"gpu-{index}",
        hardware=[CPU, CUDA],
        slots=rng.choice((2, 4)),
        speed=round(rng.uniform(0.8, 1.2), 3),
    )


def _task(rng: random.Random, index: int, submit_time: float) -> TraceTask:
    draw = rng.random()
    # The last kind also takes what rounding leaves of the shares.
    requirements, means = _TASK_MIX[-1][1:]
    for share, kind_requirements, kind_means in _TASK_MIX:
        draw -= share
        if draw < 0:
            requirements, means = kind_requirements, kind_means
            break
    # The same log-normal factor for every class: a long test is long everywhere.
    factor = rng.lognormvariate(-(_SIGMA**2) / 2, _SIGMA)  # mean 1
    return TraceTask(
        task_id=f"t-{index}",
        submit_time=round(submit_time, 6),
        requirements=requirements,
        durations={kind: round(mean * factor, 6) for kind, mean in means.items()},
    )


def _work(rng: random.Random, index: int) -> _Work:
    """One repeated work: its kind and length, drawn as :func:`_task` draws a task's."""
    made = _task(rng, index, 0.0)
    return (f"work-{index}", made.requirements, dict(made.durations))


def _repeat(
    rng: random.Random, catalogue: list[_Work], index: int, submit_time: float
) -> TraceTask:
    name, requirements, durations = rng.choice(catalogue)
    noise = rng.lognormvariate(-(_REPEAT_SIGMA**2) / 2, _REPEAT_SIGMA)
    return TraceTask(
        task_id=f"t-{index}",
        submit_time=round(submit_time, 6),
        requirements=requirements,
        durations={kind: round(seconds * noise, 6) for kind, seconds in durations.items()},
        work=name,
    )


def _capacity_per_second(fleet: list[TraceWorker]) -> float:
    """Tasks per second the fleet finishes on average with the mix above (roughly:
    each slot at its speed, over the mix's mean duration on its class)."""
    total = 0.0
    for worker in fleet:
        cls = worker.hardware_class
        mean = math.fsum(
            share * means.get(cls, max(means.values())) for share, _, means in _TASK_MIX
        )
        total += worker.slots * worker.speed / mean
    return total
