"""Past runs for a simulation: the history a coordinator would have read from its store.

Callers: ``benchmarks/simulate.py --history N`` and the simulator's tests hand
:func:`past_runs` to :class:`~testfleet.simulation.engine.Simulator`, which
seeds the coordinator state's speed books with it before the replay (as a
real coordinator seeds them from the store at start-up,
``store/speed_queries.py``). Deterministic: the same trace, ``runs`` and
``seed`` give the same samples.

What it makes: for each repeated work in the trace (``TraceTask.work``),
``runs`` earlier runs, each on a worker drawn uniformly from the fleet, taking
what the trace says that work takes there (``TraceTask.duration_on``: the
worker's hardware class and speed). Work seen once has no history.
"""

from __future__ import annotations

import random
import zlib

from testfleet.domain.enums import TaskType
from testfleet.domain.work_keys import SpeedSample, work_key
from testfleet.simulation.trace import Trace


def simulated_config(name: str) -> dict[str, object]:
    """The config a simulated task of work ``name`` (or a one-off task's id) is
    submitted with: its work key is a hash of it, so equal names share a key."""
    return {"seed": zlib.crc32(name.encode("utf-8"))}


def past_runs(trace: Trace, runs: int, seed: int = 0) -> list[SpeedSample]:
    """``runs`` past runs of each repeated work of ``trace``, oldest first."""
    if runs < 0:
        raise ValueError("runs must be 0 or more")
    rng = random.Random(f"history-{seed}")
    first_of: dict[str, int] = {}
    for index, task in enumerate(trace.tasks):
        if task.work is not None:
            first_of.setdefault(task.work, index)
    samples = []
    for _ in range(runs):
        for work, index in sorted(first_of.items()):
            task = trace.tasks[index]
            worker = rng.choice(trace.workers)
            samples.append(
                SpeedSample(
                    worker_id=worker.worker_id,
                    hardware=worker.hardware_class,
                    work_key=work_key(TaskType.SIMULATED, simulated_config(work)),
                    seconds=task.duration_on(worker),
                )
            )
    return samples
