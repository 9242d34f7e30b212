"""What the REST API may read of the coordinator's live state, and nothing more.

Callers: the routes of :mod:`testfleet.coordinator.api` (workers, drain,
stats, health), :mod:`testfleet.coordinator.pytest_runs_api` (a run's open
chunks) and the dashboard (:mod:`testfleet.coordinator.dashboard`). They run
on the same event loop as the coordinator's loop, so a read never sees a
turn half applied; what they get back are copies, so nothing a route does can
change the state machine, whose one writer is the loop.

Why a view: the routes used to reach into ``loop.state.workers``,
``.queue`` and ``.tasks``, which tied the API to how the state machine keeps
its books. This class names exactly what the routes need.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from testfleet.coordinator.load_history import LoadPoint
from testfleet.coordinator.speculation import SpeculationEvent
from testfleet.coordinator.state import CoordinatorState
from testfleet.coordinator.worker_speed import UNMEASURED, WorkerSpeed
from testfleet.coordinator.workers import LiveWorker
from testfleet.domain.enums import TaskStatus, WorkerStatus
from testfleet.domain.records import TaskRecord, WorkerRecord


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """One worker as the API shows it (a copy, taken when asked)."""

    record: WorkerRecord
    connected: bool
    draining: bool
    #: Attempts open on it (assigned or running).
    running: int
    #: Its measured speed (``coordinator/worker_speed.py``; typical until measured).
    speed: WorkerSpeed = UNMEASURED

    @classmethod
    def of(cls, worker: LiveWorker, speed: WorkerSpeed = UNMEASURED) -> WorkerSnapshot:
        record = worker.record
        return cls(
            record=replace(record, hardware_metrics=dict(record.hardware_metrics)),
            connected=worker.connected,
            draining=worker.draining,
            running=len(worker.attempts),
            speed=speed,
        )


@dataclass(frozen=True, slots=True)
class SlotUse:
    """Slots of the connected workers: how many, and how many run an attempt."""

    total: int
    busy: int


@dataclass(frozen=True, slots=True)
class PriorityQueueState:
    """Queued tasks of one priority: how many, and when the oldest entered the queue."""

    queued: int
    oldest_queued_at: float


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Queued tasks: ready to place, and waiting out a retry delay."""

    pending: int
    delayed: int


@dataclass(frozen=True, slots=True)
class OpenAttemptSnapshot:
    """An attempt assigned or running now, with its task's timeout (the alert rules)."""

    attempt_id: int
    task_id: str
    worker_id: str
    start_time: float
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class PriorityLevel:
    """Queued tasks ready to place at one priority: how many, and since when the oldest waits."""

    priority: int
    count: int
    oldest_queued_at: float


@dataclass(frozen=True, slots=True)
class QueuedPlace:
    """Where a queued task stands: its priority level, and how many of that
    level are ahead of it (oldest first; aging is not counted)."""

    priority: int
    ahead: int
    level_size: int


class StateView:
    """Read-only answers about one :class:`CoordinatorState` (see the module docstring)."""

    def __init__(self, state: CoordinatorState) -> None:
        self._state = state

    def open_task(self, task_id: str) -> TaskRecord | None:
        """A copy of an open (not yet finished) task's live record; finished tasks
        are only in the store."""
        task = self._state.tasks.get(task_id)
        return None if task is None else replace(task, reported_tests=None)

    def workers(self) -> list[WorkerSnapshot]:
        """Every worker seen since start-up (or recovered), ordered by id."""
        return [
            WorkerSnapshot.of(worker, self._state.speeds.status(worker_id))
            for worker_id, worker in sorted(self._state.workers.items(), key=lambda item: item[0])
        ]

    def worker(self, worker_id: str) -> WorkerSnapshot | None:
        worker = self._state.workers.get(worker_id)
        if worker is None:
            return None
        return WorkerSnapshot.of(worker, self._state.speeds.status(worker_id))

    def load_history(self, worker_id: str) -> list[LoadPoint]:
        """The worker's recent heartbeat loads, oldest first (the workers page's sparklines)."""
        return self._state.load_history.recent(worker_id)

    def worker_counts(self) -> dict[WorkerStatus, int]:
        """Workers per status; every :class:`WorkerStatus` is a key (0 when none)."""
        counts = dict.fromkeys(WorkerStatus, 0)
        for worker in self._state.workers.values():
            counts[worker.record.status] += 1
        return counts

    def speculation_counts(self) -> dict[SpeculationEvent, int]:
        """Speculative copies started, won and cancelled since start-up (``/metrics``)."""
        return dict(self._state.speculation.counts)

    def connected_workers(self) -> int:
        return sum(1 for worker in self._state.workers.values() if worker.connected)

    def slots(self) -> SlotUse:
        connected = [w for w in self._state.workers.values() if w.connected]
        return SlotUse(
            total=sum(w.record.slots for w in connected),
            busy=sum(len(w.attempts) for w in connected),
        )

    def queue_depth(self) -> QueueDepth:
        queue = self._state.queue
        return QueueDepth(pending=len(queue), delayed=queue.delayed_count)

    def queued_by_priority(self) -> dict[int, PriorityQueueState]:
        """Queued tasks (ready or waiting out a retry delay) per priority, sorted by
        priority; read by ``/metrics`` at scrape time (one pass over the open tasks)."""
        found: dict[int, tuple[int, float]] = {}
        for task in self._state.tasks.values():
            if task.status is TaskStatus.QUEUED:
                count, oldest = found.get(task.spec.priority, (0, task.queued_at))
                found[task.spec.priority] = (count + 1, min(oldest, task.queued_at))
        return {p: PriorityQueueState(c, oldest) for p, (c, oldest) in sorted(found.items())}

    def unschedulable_counts(self) -> dict[str, int]:
        """Queued tasks no connected worker can run, by the reason (sorted by reason)."""
        counts: dict[str, int] = {}
        for task in self._state.tasks.values():
            reason = task.unschedulable_reason
            if reason is not None and task.status is TaskStatus.QUEUED:
                counts[reason] = counts.get(reason, 0) + 1
        return dict(sorted(counts.items()))

    def queue_levels(self) -> list[PriorityLevel]:
        """The queue by priority (lower number first); the dashboard's overview
        samples it about once a second. Costs one look per level, not per task."""
        levels = []
        for priority, pending in sorted(self._state.queue.pending_by_priority().items()):
            if not pending:
                continue
            oldest = next(iter(pending)).queued_at
            levels.append(PriorityLevel(priority, len(pending), oldest))
        return levels

    def queued_place(self, task_id: str) -> QueuedPlace | None:
        """Where the queued task ``task_id`` waits (the dashboard's task page), or
        None if it is not in the queue (running, finished, or waiting out a retry delay)."""
        for priority, pending in self._state.queue.pending_by_priority().items():
            for ahead, task in enumerate(pending):
                if task.task_id == task_id:
                    return QueuedPlace(priority, ahead, len(pending))
        return None

    def unreadable_rows(self, limit: int) -> list[str]:
        """The first ``limit`` rows start-up could not read back and left out."""
        return self._state.unreadable_rows[:limit]

    def oldest_ready_queued_at(self, now: float) -> float | None:
        """When the oldest queued task that could be placed now was queued: not
        unschedulable, not waiting out a retry delay (the queue-stuck alert)."""
        times = [
            task.queued_at
            for task in self._state.tasks.values()
            if task.status is TaskStatus.QUEUED
            and task.unschedulable_reason is None
            and (task.not_before is None or task.not_before <= now)
        ]
        return min(times, default=None)

    def open_attempts(self) -> list[OpenAttemptSnapshot]:
        """Every attempt assigned or running now (the attempt-overdue alert)."""
        found = []
        for attempt in self._state.open_attempts.values():
            task = self._state.tasks.get(attempt.task_id)
            if task is not None:
                found.append(
                    OpenAttemptSnapshot(
                        attempt.attempt_id,
                        attempt.task_id,
                        attempt.worker_id,
                        attempt.start_time,
                        task.spec.timeout_seconds,
                    )
                )
        return found
