"""What the dashboard's pages show, as plain rows: pure functions over the state
view's copies and the store's records, with ``now`` handed in.

Callers: :mod:`.routes` (the pages and their row fragments) and :mod:`.live`
(the sampler's overview fragment). No I/O and no clock reads here, so the unit
tests build every row from fakes on a fixed time. Ages the browser counts up
(heartbeat age, how long a task has waited) are not text here but the moment
they count from (``since``); ``dashboard.js`` turns it into "12 s" every second
against the server's time, so the pages need no event to keep them current.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from testfleet.coordinator.dashboard.sparklines import Sparkline, sparkline
from testfleet.coordinator.health import CoordinatorHealth
from testfleet.coordinator.load_history import LoadPoint
from testfleet.coordinator.state_view import PriorityLevel, QueuedPlace, WorkerSnapshot
from testfleet.domain.enums import ShownStatus, TaskStatus, TaskType, WorkerStatus
from testfleet.domain.records import TaskRecord


class FleetState(StrEnum):
    """A worker as the dashboard counts it: connected ones split by what they do."""

    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    LOST = "lost"
    DISCONNECTED = "disconnected"
    LEFT = "left"
    REVOKED = "revoked"


def fleet_state(worker: WorkerSnapshot) -> FleetState:
    status = worker.record.status
    if worker.connected:
        if worker.draining or status is WorkerStatus.DRAINING:
            return FleetState.DRAINING
        return FleetState.BUSY if worker.running else FleetState.IDLE
    return {
        WorkerStatus.LOST: FleetState.LOST,
        WorkerStatus.LEFT: FleetState.LEFT,
        WorkerStatus.REVOKED: FleetState.REVOKED,
    }.get(status, FleetState.DISCONNECTED)


@dataclass(frozen=True, slots=True)
class Overview:
    """The overview page's counters (the fragment the event stream replaces)."""

    fleet: dict[FleetState, int]
    levels: list[PriorityLevel]
    delayed: int
    unschedulable: dict[str, int]
    running: int
    slots: int
    started: float
    #: Alerts firing now (a link to the alerts page; kept live by the stream).
    firing_alerts: int = 0
    #: Recent commit times and event-loop lag (None: not wired, as in some tests).
    health: CoordinatorHealth | None = None


def overview(
    workers: list[WorkerSnapshot],
    levels: list[PriorityLevel],
    delayed: int,
    unschedulable: Mapping[str, int],
    started: float,
    *,
    firing_alerts: int = 0,
    health: CoordinatorHealth | None = None,
) -> Overview:
    fleet = dict.fromkeys(FleetState, 0)
    for worker in workers:
        fleet[fleet_state(worker)] += 1
    connected = [w for w in workers if w.connected]
    return Overview(
        fleet=fleet,
        levels=levels,
        delayed=delayed,
        unschedulable=dict(unschedulable),
        running=sum(w.running for w in connected),
        slots=sum(w.record.slots for w in connected),
        started=started,
        firing_alerts=firing_alerts,
        health=health,
    )


@dataclass(frozen=True, slots=True)
class WorkerRow:
    worker_id: str
    hostname: str
    state: FleetState
    cpu: str
    memory_gb: float
    gpus: list[str]
    hardware: list[str]
    tags: dict[str, str]
    torch: str | None
    slots: int
    running: int
    last_heartbeat: float
    #: Heartbeat age counts up against this (the coordinator's timeout).
    heartbeat_timeout: float
    #: Recent load (None before the first heartbeat since the coordinator started).
    load: Sparkline | None = None
    #: Its measured speed factor ("" until measured: coordinator/worker_speed.py).
    speed: str = ""
    #: Its speed fell well below its own baseline.
    slowed: bool = False


def worker_row(
    worker: WorkerSnapshot, heartbeat_timeout: float, loads: Sequence[LoadPoint] = ()
) -> WorkerRow:
    """One row of the workers page; ``loads`` (the state view's load history)
    becomes its sparkline."""
    caps = worker.record.capabilities
    gpus = [
        f"{gpu.name} {gpu.memory_gb:g} GB"
        + ("" if gpu.compute_capability is None else f" cc {gpu.compute_capability:g}")
        for gpu in caps.gpus
    ]
    cores = caps.cpu.logical_cores
    return WorkerRow(
        worker_id=worker.record.worker_id,
        hostname=worker.record.hostname,
        state=fleet_state(worker),
        cpu=f"{caps.cpu.model} ({cores} {'core' if cores == 1 else 'cores'})",
        memory_gb=round(caps.memory_gb, 1),
        gpus=gpus,
        hardware=[kind.value for kind in caps.hardware],
        tags=dict(caps.tags),
        torch=None if caps.torch is None else caps.torch.version,
        slots=worker.record.slots,
        running=worker.running,
        last_heartbeat=worker.record.last_heartbeat,
        heartbeat_timeout=heartbeat_timeout,
        load=sparkline(loads),
        speed=f"{worker.speed.factor:.2f}\u00d7" if worker.speed.samples else "",
        slowed=worker.speed.slowed,
    )


@dataclass(frozen=True, slots=True)
class WorkerFilter:
    """The workers page's filters, kept in its URL (all optional)."""

    state: FleetState | None = None
    hardware: str | None = None
    #: ``key=value``: a tag the worker has.
    tag: str | None = None
    #: Part of the worker id or host name.
    q: str | None = None

    def keeps(self, row: WorkerRow) -> bool:
        if self.state is not None and row.state is not self.state:
            return False
        if self.hardware and self.hardware not in row.hardware:
            return False
        if self.tag:
            key, _, value = self.tag.partition("=")
            if row.tags.get(key) != value:
                return False
        return not self.q or self.q in row.worker_id or self.q in row.hostname

    def query(self) -> dict[str, str]:
        """The filters as URL parameters (only those set)."""
        found = {
            "state": None if self.state is None else self.state.value,
            "hardware": self.hardware,
            "tag": self.tag,
            "q": self.q,
        }
        return {key: value for key, value in found.items() if value}


def failure_rate(tasks: list[TaskRecord]) -> float | None:
    """Failed, timed-out share of the finished ones among ``tasks`` (None: none finished)."""
    finished = [t for t in tasks if t.status.is_terminal and t.status is not TaskStatus.CANCELLED]
    if not finished:
        return None
    failed = sum(1 for t in finished if t.status is not TaskStatus.COMPLETED)
    return failed / len(finished)


def shown_status(task: TaskRecord) -> ShownStatus:
    if task.status is TaskStatus.QUEUED and task.unschedulable_reason is not None:
        return ShownStatus.UNSCHEDULABLE
    return ShownStatus(task.status.value)


@dataclass(frozen=True, slots=True)
class TaskRow:
    task_id: str
    task_type: TaskType
    priority: int
    status: ShownStatus
    worker_id: str | None
    attempts: int
    create_time: float
    #: Waited from creation to its start; None while it has not started (then
    #: the page counts up from ``queued_at``).
    wait_seconds: float | None
    queued_at: float
    start_time: float | None
    duration_seconds: float | None
    error_class: str | None


def task_row(task: TaskRecord) -> TaskRow:
    start, end = task.start_time, task.end_time
    return TaskRow(
        task_id=task.task_id,
        task_type=task.spec.type,
        priority=task.spec.priority,
        status=shown_status(task),
        worker_id=task.worker_id,
        attempts=task.attempts,
        create_time=task.create_time,
        wait_seconds=None if start is None else max(0.0, start - task.create_time),
        queued_at=task.queued_at,
        start_time=start,
        duration_seconds=None if start is None or end is None else max(0.0, end - start),
        error_class=None if task.error_class is None else task.error_class.value,
    )


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """The tasks page's filters, kept in its URL (all optional)."""

    status: ShownStatus | None = None
    task_type: TaskType | None = None
    priority: int | None = None
    worker: str | None = None
    run: str | None = None

    def query(self) -> dict[str, str]:
        found = {
            "status": None if self.status is None else self.status.value,
            "type": None if self.task_type is None else self.task_type.value,
            "priority": None if self.priority is None else str(self.priority),
            "worker": self.worker,
            "run": self.run,
        }
        return {key: value for key, value in found.items() if value}


@dataclass(frozen=True, slots=True)
class WaitReason:
    """Why a queued task has not started, in words, and the detail behind it."""

    summary: str
    details: list[str] = field(default_factory=list)


def wait_reason(task: TaskRecord, place: QueuedPlace | None, now: float) -> WaitReason | None:
    """Why ``task`` waits (None if it is not queued): the unschedulable reason the
    state keeps, a retry delay, or its place in the queue behind busy workers."""
    if task.status is not TaskStatus.QUEUED:
        return None
    if task.unschedulable_reason is not None:
        return WaitReason(
            "no connected worker can run it",
            [task.unschedulable_reason, "it runs as soon as a worker that fits joins"],
        )
    if task.not_before is not None and task.not_before > now:
        return WaitReason(
            "waiting out its retry delay", [f"queued again in {task.not_before - now:.0f} s"]
        )
    if place is not None:
        return WaitReason(
            "every worker that can run it is busy",
            [
                f"position {place.ahead + 1} of {place.level_size} at priority {place.priority}"
                " (lower runs first; waiting lowers the number over time)"
            ],
        )
    return WaitReason("queued; the scheduler places it on its next turn")
