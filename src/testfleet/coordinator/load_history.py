"""The recent heartbeat loads of each worker, bounded, in memory.

Callers: :class:`~testfleet.coordinator.state.CoordinatorState` records each
heartbeat's load here as it applies the frame (so the one writer of
coordinator state is also the one writer of this); the state view hands out
copies (:meth:`~testfleet.coordinator.state_view.StateView.load_history`),
which the dashboard's workers page draws as sparklines. Nothing is stored:
after a restart the lines start again from the next heartbeat, which is what
a "recent load" picture needs.

Bounded twice: :data:`POINTS` loads per worker (a minute or so at the
default heartbeat interval) and :data:`WORKERS` workers, the oldest-updated
forgotten first, so a fleet of churning worker ids cannot grow it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from testfleet.protocol.messages import WorkerLoad

#: Loads kept per worker.
POINTS = 60
#: Workers kept (the least recently heard from is dropped first).
WORKERS = 10_000


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """One heartbeat's load, as the sparklines need it (immutable: safe to hand out)."""

    time: float
    cpu_percent: float
    memory_percent: float
    gpu_utilization_percent: float | None = None
    gpu_memory_percent: float | None = None


class LoadHistory:
    """Per worker, its last :data:`POINTS` loads, oldest first."""

    def __init__(self, points: int = POINTS, workers: int = WORKERS) -> None:
        if points < 1 or workers < 1:
            raise ValueError(f"points and workers must be >= 1, got {points}, {workers}")
        self._points = points
        self._workers = workers
        self._loads: OrderedDict[str, deque[LoadPoint]] = OrderedDict()

    def record(self, worker_id: str, now: float, load: WorkerLoad) -> None:
        """Keep one heartbeat's load (called by the state as it applies the heartbeat)."""
        ring = self._loads.get(worker_id)
        if ring is None:
            ring = self._loads[worker_id] = deque(maxlen=self._points)
            if len(self._loads) > self._workers:
                self._loads.popitem(last=False)
        else:
            self._loads.move_to_end(worker_id)
        ring.append(
            LoadPoint(
                time=now,
                cpu_percent=load.cpu_percent,
                memory_percent=load.memory_percent,
                gpu_utilization_percent=load.gpu_utilization_percent,
                gpu_memory_percent=load.gpu_memory_percent,
            )
        )

    def recent(self, worker_id: str) -> list[LoadPoint]:
        """The worker's kept loads, oldest first ([] for one not heard from)."""
        return list(self._loads.get(worker_id, ()))
