"""The chaos suite's faults and their seeded schedule (pure: no I/O, no clock).

The harness (``chaos_fleet.py``) asks :func:`make_schedule` for a list of
:class:`Fault` values from a seed, then injects them one after another. The
same seed, length and fleet always give the same schedule, so a failing run
is replayed by its seed (timing on a busy machine still varies; the faults,
their order, targets and durations do not).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class FaultKind(StrEnum):
    """What a fault does; ``targets`` says which processes each can hit."""

    #: kill -9 a worker, then restart it under the same id.
    WORKER_KILL = "worker_kill"
    #: SIGSTOP a worker (a hung machine), then SIGCONT.
    WORKER_STOP = "worker_stop"
    #: kill -9 the coordinator, then restart it on the same DuckDB file and port.
    COORDINATOR_KILL = "coordinator_kill"
    #: SIGSTOP the coordinator, then SIGCONT.
    COORDINATOR_STOP = "coordinator_stop"
    #: Take a namespaced worker's veth link down (every packet dropped), then up.
    PARTITION = "partition"
    #: Add latency to a namespaced worker's link through its proxy.
    SLOW_LINK = "slow_link"
    #: Stall a namespaced worker's proxy (connections open, nothing flows).
    STALLED_LINK = "stalled_link"
    #: Reset every connection through a namespaced worker's proxy.
    DROPPED_CONNECTIONS = "dropped_connections"
    #: Fill the tmpfs under the DuckDB file, then free it.
    DISK_FULL = "disk_full"

    @property
    def targets(self) -> str:
        """``worker`` (any), ``linked`` (a namespaced worker) or ``coordinator``."""
        if self in (FaultKind.WORKER_KILL, FaultKind.WORKER_STOP):
            return "worker"
        if self in (FaultKind.COORDINATOR_KILL, FaultKind.COORDINATOR_STOP, FaultKind.DISK_FULL):
            return "coordinator"
        return "linked"


@dataclass(frozen=True)
class Fault:
    """One fault: when (seconds after the chaos phase starts), what, on which
    process, and how long before it is healed (restart, SIGCONT, link up, freed)."""

    at: float
    kind: FaultKind
    target: str
    hold_seconds: float

    def describe(self) -> str:
        where = f"t+{self.at:5.1f}s {self.kind.value:<20} {self.target:<12}"
        return f"{where} for {self.hold_seconds:.1f}s"


#: Seconds between one fault healing and the next starting (drawn uniformly).
GAP_SECONDS = (1.0, 3.0)
#: How long a fault holds (drawn uniformly); a partition longer than the
#: coordinator's heartbeat timeout gets its worker declared lost.
HOLD_SECONDS = {
    FaultKind.WORKER_KILL: (0.5, 3.0),
    FaultKind.WORKER_STOP: (1.0, 6.0),
    FaultKind.COORDINATOR_KILL: (0.5, 2.0),
    FaultKind.COORDINATOR_STOP: (1.0, 4.0),
    FaultKind.PARTITION: (1.0, 8.0),
    FaultKind.SLOW_LINK: (2.0, 6.0),
    FaultKind.STALLED_LINK: (1.0, 6.0),
    FaultKind.DROPPED_CONNECTIONS: (0.0, 0.0),
    FaultKind.DISK_FULL: (2.0, 6.0),
}


def make_schedule(
    seed: int,
    seconds: float,
    kinds: Sequence[FaultKind],
    workers: Sequence[str],
    linked_workers: Sequence[str],
) -> list[Fault]:
    """Faults one after another over ``seconds``, from ``random.Random(seed)``.

    ``workers`` are all worker ids, ``linked_workers`` those behind a
    namespace and proxy. Kinds whose targets do not exist are left out; the
    first faults go through every kind once (shuffled) so that a short run
    still covers them all.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, not {seconds}")
    usable = [
        kind
        for kind in kinds
        if kind.targets == "coordinator"
        or (kind.targets == "worker" and workers)
        or (kind.targets == "linked" and linked_workers)
    ]
    if not usable:
        raise ValueError("no fault kind has a target in this fleet")
    rng = random.Random(seed)
    first_round = list(usable)
    rng.shuffle(first_round)
    faults: list[Fault] = []
    t = rng.uniform(*GAP_SECONDS)
    while t < seconds:
        kind = first_round.pop(0) if first_round else rng.choice(usable)
        if kind.targets == "worker":
            target = rng.choice(list(workers))
        elif kind.targets == "linked":
            target = rng.choice(list(linked_workers))
        else:
            target = "coordinator"
        hold = round(rng.uniform(*HOLD_SECONDS[kind]), 2)
        faults.append(Fault(round(t, 2), kind, target, hold))
        t += hold + rng.uniform(*GAP_SECONDS)
    return faults
