"""What a simulation run measured, and how it is printed.

Callers: :class:`testfleet.simulation.engine.Simulator` fills a
:class:`SimulationReport` at the end of a run; ``benchmarks/simulate.py``
prints it with :meth:`SimulationReport.lines`. Everything but the wall-time
figures comes from simulated time, so it is the same on every machine for the
same trace and policy (the unit tests compare those).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from testfleet.domain.enums import HardwareKind


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (0.0 for none): the smallest value
    with at least ``fraction`` of the values at or below it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """Figures from one replay of a trace under one policy."""

    policy: str
    workers: int
    tasks: int
    tasks_completed: int
    #: Tasks still queued when nothing more could happen (no worker matches them).
    tasks_left: int
    #: Simulated seconds from the first submission to the last completion.
    makespan_seconds: float
    queue_wait_p50_seconds: float
    queue_wait_p99_seconds: float
    #: Busy slot-seconds over available slot-seconds during the makespan, per class.
    utilisation: dict[HardwareKind, float]
    #: Placements the scheduling policy made (one per attempt assigned).
    decisions: int
    #: Turns of the coordinator state (handle events, schedule, take effects).
    turns: int
    #: Rows in the write batches the simulator dropped (no store: nothing is committed).
    rows_dropped: int
    #: Wall-clock seconds the replay took, and the part spent in the policy itself.
    wall_seconds: float
    policy_seconds: float

    @property
    def decisions_per_second(self) -> float:
        """Decisions per second of wall time, for the whole replay (state included)."""
        return self.decisions / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """Human-readable lines, one figure each (printed by ``benchmarks/simulate.py``)."""
        used = ", ".join(f"{kind.value} {share:.1%}" for kind, share in self.utilisation.items())
        return [
            f"policy                {self.policy}",
            f"workers / tasks       {self.workers:,} / {self.tasks:,}",
            f"tasks completed       {self.tasks_completed:,} ({self.tasks_left:,} left queued)",
            f"makespan              {self.makespan_seconds:,.1f} s (simulated)",
            f"queue wait p50 / p99  {self.queue_wait_p50_seconds:,.2f} s / "
            f"{self.queue_wait_p99_seconds:,.2f} s",
            f"utilisation           {used}",
            f"decisions             {self.decisions:,} in {self.turns:,} turns",
            f"write rows dropped    {self.rows_dropped:,}",
            f"wall time             {self.wall_seconds:.2f} s (policy {self.policy_seconds:.2f} s)",
            f"decisions per second  {self.decisions_per_second:,.0f} (wall time)",
        ]
