"""The scheduler's input and output: a snapshot in, decisions out.

The coordinator builds a :class:`SchedulingView` from its state after each turn
of its loop, calls :func:`testfleet.scheduling.scheduler.schedule`, and applies
the :class:`SchedulingDecisions`. Everything time-dependent comes in as
``view.now``; ties are broken explicitly, so the same view always gives the
same decisions.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.resources import NO_RESOURCES, ResourceAmounts
from testfleet.domain.task import Requirements


@dataclass(frozen=True, slots=True)
class PendingTask:
    """A queued task, as far as the scheduler needs to know it."""

    task_id: str
    task_type: TaskType
    priority: int
    queued_at: float
    requirements: Requirements
    #: ``requirements.key()`` plus the type, computed once by the coordinator.
    match_key: str
    #: Which earlier work this repeats (:mod:`testfleet.domain.work_keys`), to
    #: look up in ``SchedulingView.typical_seconds``; "" when not known.
    work_key: str = ""


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A connected worker that may take work."""

    worker_id: str
    capabilities: WorkerCapabilities
    free_slots: int
    #: False while draining: it matches (so tasks are not called unschedulable)
    #: but takes no new work.
    accepting: bool = True
    #: What its open attempts reserve (``requirements.resources``); the rest of
    #: its allocatable totals is free for new tasks.
    reserved: ResourceAmounts = NO_RESOURCES


@dataclass(frozen=True, slots=True)
class SchedulingView:
    """A snapshot of what the scheduler decides over.

    ``pending_by_priority`` maps each priority level to its queued tasks, oldest
    first (the coordinator keeps them in that order, so the scheduler merges
    levels instead of sorting the whole queue every turn).
    """

    now: float
    pending_by_priority: Mapping[int, Collection[PendingTask]]
    workers: Collection[WorkerView]
    #: One requirement set per match key present in the queue, to find the
    #: unschedulable ones without scanning every task.
    pending_keys: Mapping[str, tuple[TaskType, Requirements]] = field(default_factory=dict)
    #: Every this many seconds of waiting lowers a task's effective priority
    #: number by one, so low priority work never starves.
    aging_seconds: float = 60.0
    #: Measured speed factors by worker id (:mod:`testfleet.coordinator.worker_speed`):
    #: 2.0 does the same work in half the typical time; a worker not listed is 1.0.
    #: Read by history-aware policies (``scheduling/estimated_finish.py``) only.
    speed_factors: Mapping[str, float] = field(default_factory=dict)
    #: Work key -> hardware class -> seconds a factor-1.0 worker of that class
    #: typically takes for it (from history). Empty: no history.
    typical_seconds: Mapping[str, Mapping[HardwareKind, float]] = field(default_factory=dict)
    #: Optional: the accepting workers of ``workers`` with a free slot, already
    #: in best-fit order (capability rank, then worker id). The coordinator
    #: keeps this order as workers change (``WorkerRegistry.ranked``) so the
    #: scheduler need not sort every worker every turn; None: it ranks
    #: ``workers`` itself. Either way the decisions are the same.
    ranked_workers: Sequence[WorkerView] | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    task_id: str
    worker_id: str


@dataclass(frozen=True, slots=True)
class SchedulingDecisions:
    placements: list[Placement] = field(default_factory=list)
    #: match key -> why no connected worker can run tasks with that key.
    unschedulable: dict[str, str] = field(default_factory=dict)
