"""Who is connected: worker identities, their sockets, and what each one runs.

Callers: :class:`~testfleet.coordinator.state.CoordinatorState` (the one
writer) asks the registry to admit a ``hello``, to map a connection to its
worker, to forget a socket and to find silent workers; it keeps the task
consequences (losing and requeueing attempts) to itself. No I/O, no clock:
``now`` is passed in.

Which credentials admit a hello is :mod:`~testfleet.coordinator.worker_identity`'s
rule; the registry keeps the revoked ids (:meth:`WorkerRegistry.revoke`) that
rule is asked about.

Identity rule: a worker id belongs to one process at a time. Each worker
process sends a random ``session_key`` in its hello; a reconnect with the same
key replaces the old socket (the network blipped), a different key while the
id is connected is refused (another process claims it). Who may claim an id
at all is the credential's business (a worker token or certificate is bound
to one id, ``worker_identity.py``); between two holders of valid credentials
for the same id, the live connection keeps it until it is gone (its socket
closed, or it was declared lost), and the refused one retries.

Dead or slow (:meth:`WorkerRegistry.overdue`): a worker whose socket closed
is gone unless the same process reconnects within the short disconnect
grace; a worker whose socket stays open but says nothing (hung, partitioned)
is declared lost only after the heartbeat timeout. A closed socket is strong
evidence (the kernel closes it when the process dies); silence is not.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from testfleet.domain.enums import WorkerStatus
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.records import WorkerRecord
from testfleet.domain.resources import NO_RESOURCES, ResourceAmounts
from testfleet.protocol.messages import PROTOCOL_VERSION, Hello, ProtocolErrorCode
from testfleet.scheduling.matching import CapabilityRank, capability_rank
from testfleet.scheduling.view import WorkerView

#: A worker in one of these may still come back with its attempts.
OPEN_WORKER_STATUSES = (WorkerStatus.CONNECTED, WorkerStatus.DRAINING, WorkerStatus.DISCONNECTED)
#: Deadlines are filed this much early, so float rounding can never make
#: :meth:`WorkerRegistry.overdue` look at a worker after it became due.
_DEADLINE_MARGIN_SECONDS = 1e-3


@dataclass(slots=True)
class LiveWorker:
    """A worker as the coordinator tracks it between events."""

    record: WorkerRecord
    session_key: str
    connection_id: int | None
    #: Open attempts (assigned or running) on this worker. Changed only
    #: through :meth:`hold` and :meth:`release`, which tell the registry.
    attempts: set[int] = field(default_factory=set)
    _draining: bool = False
    #: It said bye: it takes no new work, and a disconnect without attempts
    #: means it left on purpose.
    _leaving: bool = False
    #: The heartbeat time last written to the store (see CoordinatorState).
    heartbeat_written_at: float = 0.0
    #: When its socket was seen to close (None: connected, or known only from
    #: the store after a restart, which gets the heartbeat timeout instead).
    closed_at: float | None = None
    #: What its open attempts reserve (``requirements.resources``), by attempt;
    #: only attempts that reserve something are listed.
    reservations: dict[int, ResourceAmounts] = field(default_factory=dict)
    #: The registry's set of workers whose scheduler view is out of date
    #: (shared by all its workers; see :meth:`WorkerRegistry.views`). Every
    #: change the scheduler can see adds this worker's id to it.
    stale: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def free_slots(self) -> int:
        return max(0, self.record.slots - len(self.attempts))

    @property
    def draining(self) -> bool:
        """An admin drained it: it finishes what it has and takes nothing new."""
        return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        self.stale.add(self.record.worker_id)

    @property
    def leaving(self) -> bool:
        """It said bye (see ``_leaving``)."""
        return self._leaving

    @leaving.setter
    def leaving(self, value: bool) -> None:
        self._leaving = value
        self.stale.add(self.record.worker_id)

    def hold(self, attempt_id: int, amounts: ResourceAmounts) -> None:
        """Count ``attempt_id`` as open here, reserving ``amounts`` until :meth:`release`."""
        self.attempts.add(attempt_id)
        if amounts:
            self.reservations[attempt_id] = amounts
        self.stale.add(self.record.worker_id)

    def release(self, attempt_id: int) -> None:
        self.attempts.discard(attempt_id)
        self.reservations.pop(attempt_id, None)
        self.stale.add(self.record.worker_id)

    @property
    def reserved(self) -> ResourceAmounts:
        total = NO_RESOURCES
        for amounts in self.reservations.values():
            total = total + amounts
        return total

    @property
    def connected(self) -> bool:
        return self.connection_id is not None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A hello that cannot be admitted, and why (sent in an error frame)."""

    code: ProtocolErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Admission:
    """A hello admitted: what became of the worker's attempts and sockets."""

    worker: LiveWorker
    #: The same process's previous socket, now replaced (to be closed).
    replaced_connection: int | None
    #: Attempts the coordinator had on this worker that it no longer reports.
    lost: list[int]
    #: Attempts it reports that are still its own: it carries on with them.
    keep: list[int]
    #: Attempts it runs that are no longer its own: it should stop them.
    cancel: list[int]


class WorkerRegistry:
    """Worker identities and connections (see the module docstring)."""

    def __init__(self) -> None:
        self.workers: dict[str, LiveWorker] = {}
        self.connections: dict[int, str] = {}
        #: Revoked worker ids and when (the latest revocation of each).
        self.revoked: dict[str, float] = {}
        # The scheduler's view of the connected workers, kept between turns and
        # brought up to date only for the workers that changed (``_stale``,
        # filled by LiveWorker and by this class). Rebuilding every worker's
        # view every turn was O(workers) per turn: half of a 10,000-worker
        # simulation's time (benchmarks/simulate.py).
        self._stale: set[str] = set()
        self._views: dict[str, WorkerView] = {}
        # The accepting workers with a free slot, in best-fit order (the
        # scheduler's candidate ranking: capability rank, then worker id), as
        # two parallel lists kept sorted by insertion, so no turn sorts them.
        self._ranked_keys: list[tuple[CapabilityRank, str]] = []
        self._ranked_views: list[WorkerView] = []
        #: The key each worker in the ranked lists was filed under.
        self._rank_of: dict[str, tuple[CapabilityRank, str]] = {}
        # When each worker may next be overdue (WorkerRegistry.overdue): a heap of
        # (time, worker id), at most one live entry per worker (the time in
        # ``_deadline_of``; others are superseded), for the timeout and grace in
        # ``_limits``. Filed early, never late: a heartbeat moves a worker's
        # deadline on without touching the heap, and the entry is re-filed when
        # it comes up. Scanning every worker on every tick was O(workers) per
        # second (4% of a 10,000-worker simulation).
        self._deadlines: list[tuple[float, str]] = []
        self._deadline_of: dict[str, float] = {}
        self._limits: tuple[float, float] | None = None
        #: Each worker's place in ``workers`` (the order overdue workers are listed in).
        self._order: dict[str, int] = {}
        # Each worker's ranking key, with the capabilities it was worked out
        # from, kept while the worker is out of the ranked lists (no free slot):
        # a worker leaves and rejoins them with nearly every task it runs.
        self._rank_key: dict[str, tuple[WorkerCapabilities, tuple[CapabilityRank, str]]] = {}

    def _track(self, worker: LiveWorker) -> LiveWorker:
        """Share the stale set with ``worker`` and mark it stale (a worker new to
        ``workers``, which it is about to join)."""
        worker.stale = self._stale
        self._stale.add(worker.record.worker_id)
        self._order.setdefault(worker.record.worker_id, len(self._order))
        return worker

    def recover(self, records: list[WorkerRecord], now: float) -> list[WorkerRecord]:
        """Rebuild after a restart: every worker is disconnected, with a fresh
        grace period to come back. Returns the records whose status changed."""
        changed = []
        for record in records:
            if record.status in (WorkerStatus.CONNECTED, WorkerStatus.DRAINING):
                record.status = WorkerStatus.DISCONNECTED
                changed.append(record)
            record.last_heartbeat = now
            self.workers[record.worker_id] = self._track(
                LiveWorker(record=record, session_key="", connection_id=None)
            )
            self._file_deadline(record.worker_id)
        return changed

    def admit(self, connection_id: int, hello: Hello, now: float) -> Admission | Refusal:
        """Register ``hello`` on ``connection_id``, or say why not."""
        if hello.protocol_version != PROTOCOL_VERSION:
            return Refusal(
                ProtocolErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {hello.protocol_version} is not supported; this coordinator "
                f"speaks version {PROTOCOL_VERSION}: upgrade the worker or the coordinator",
            )
        worker = self.workers.get(hello.worker_id)
        replaced = None
        if worker is not None and worker.connection_id is not None:
            if worker.session_key != hello.session_key:
                return Refusal(
                    ProtocolErrorCode.WORKER_ID_IN_USE,
                    f"worker id {hello.worker_id!r} is already connected from another process; "
                    "this worker retries and gets in once that connection is gone (if both "
                    "are meant to run, start one with a different --worker-id)",
                )
            # The same process reconnected before we saw its old socket close.
            replaced = worker.connection_id
            self.connections.pop(replaced, None)
        if worker is None:
            worker = self._track(
                LiveWorker(
                    record=WorkerRecord(
                        worker_id=hello.worker_id,
                        hostname=hello.capabilities.hostname,
                        registration_time=now,
                        last_heartbeat=now,
                        status=WorkerStatus.CONNECTED,
                        capabilities=hello.capabilities,
                        slots=hello.slots,
                    ),
                    session_key=hello.session_key,
                    connection_id=connection_id,
                )
            )
            self.workers[hello.worker_id] = worker
        record = worker.record
        record.hostname = hello.capabilities.hostname
        record.capabilities = hello.capabilities
        record.slots = hello.slots
        record.last_heartbeat = now
        if record.status in (WorkerStatus.LOST, WorkerStatus.LEFT, WorkerStatus.REVOKED):
            worker.draining = False  # a new life: an old drain does not carry over
        worker.leaving = False
        record.status = WorkerStatus.DRAINING if worker.draining else WorkerStatus.CONNECTED
        worker.session_key = hello.session_key
        worker.connection_id = connection_id
        worker.closed_at = None
        self.connections[connection_id] = hello.worker_id
        self._stale.add(hello.worker_id)  # slots or capabilities may be new
        self._file_deadline(hello.worker_id)

        claimed = set(hello.running_attempts) | set(hello.held_results)
        return Admission(
            worker=worker,
            replaced_connection=replaced,
            lost=sorted(worker.attempts - claimed),
            keep=sorted(claimed & worker.attempts),
            cancel=sorted(set(hello.running_attempts) - worker.attempts),
        )

    def by_connection(self, connection_id: int) -> LiveWorker | None:
        """The worker on this socket; None for a replaced or refused socket."""
        worker_id = self.connections.get(connection_id)
        return None if worker_id is None else self.workers[worker_id]

    def disconnect(self, connection_id: int, now: float) -> LiveWorker | None:
        """The socket is gone. The worker keeps its attempts until it is declared
        lost: at the disconnect grace after ``now`` unless it reconnects first."""
        worker_id = self.connections.pop(connection_id, None)
        if worker_id is None:
            return None
        worker = self.workers[worker_id]
        worker.connection_id = None
        worker.closed_at = now
        self._stale.add(worker_id)
        self._file_deadline(worker_id)  # the grace may end before the timeout
        left = worker.leaving and not worker.attempts
        worker.record.status = WorkerStatus.LEFT if left else WorkerStatus.DISCONNECTED
        return worker

    def overdue(self, now: float, timeout: float, grace: float) -> list[tuple[LiveWorker, str]]:
        """Workers to declare lost now, each with why: a closed socket not
        replaced within ``grace`` seconds, or silence (an open socket, or none
        since a restart) for longer than ``timeout``. In the order of ``workers``.

        Called by the coordinator state on every tick. Only workers whose filed
        deadline has come are looked at (see ``_deadlines``); each is judged by
        the rule above and filed again at its deadline as it is now, so a
        worker reported and not declared lost is reported again next time."""
        if self._limits != (timeout, grace):
            self._limits = (timeout, grace)
            self._deadlines, self._deadline_of = [], {}
            for worker_id in self.workers:
                self._file_deadline(worker_id)
        due: list[tuple[LiveWorker, str]] = []
        looked_at: list[str] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            at, worker_id = heapq.heappop(self._deadlines)
            if self._deadline_of.get(worker_id) != at:
                continue  # superseded by an earlier deadline, already looked at
            del self._deadline_of[worker_id]
            w = self.workers[worker_id]
            if w.record.status not in OPEN_WORKER_STATUSES:
                continue  # a hello files it again if it comes back
            looked_at.append(worker_id)
            if w.closed_at is not None and now - w.closed_at >= grace:
                due.append((w, f"its connection closed {now - w.closed_at:.1f} s ago"))
            elif now - w.record.last_heartbeat > timeout:
                due.append((w, f"no heartbeat for {now - w.record.last_heartbeat:.1f} s"))
        for worker_id in looked_at:
            self._file_deadline(worker_id)
        due.sort(key=lambda item: self._order[item[0].record.worker_id])
        return due

    def _file_deadline(self, worker_id: str) -> None:
        """File when ``worker_id`` may next be overdue, unless an earlier time is
        filed already (called wherever a worker's deadline may come forward: a
        hello, a closed socket, a restart)."""
        if self._limits is None:
            return  # filed for every worker at the first overdue() call
        timeout, grace = self._limits
        worker = self.workers[worker_id]
        at = worker.record.last_heartbeat + timeout
        if worker.closed_at is not None:
            at = min(at, worker.closed_at + grace)
        at -= _DEADLINE_MARGIN_SECONDS
        filed = self._deadline_of.get(worker_id)
        if filed is None or at < filed:
            self._deadline_of[worker_id] = at
            heapq.heappush(self._deadlines, (at, worker_id))

    def mark_lost(self, worker: LiveWorker) -> int | None:
        """Declare ``worker`` lost; returns its socket, if any, for closing."""
        worker.record.status = WorkerStatus.LOST
        connection = worker.connection_id
        if connection is not None:
            self.connections.pop(connection, None)
            worker.connection_id = None
        self._stale.add(worker.record.worker_id)
        return connection

    def revoke(self, worker_id: str, revoked_at: float) -> tuple[LiveWorker | None, int | None]:
        """Revoke ``worker_id`` from ``revoked_at`` on (a later revocation moves the
        time on, an earlier one changes nothing): the worker, if known, is marked
        revoked. Returns it and its socket, if any, for closing."""
        self.revoked[worker_id] = max(revoked_at, self.revoked.get(worker_id, revoked_at))
        worker = self.workers.get(worker_id)
        if worker is None:
            return None, None
        worker.record.status = WorkerStatus.REVOKED
        worker.draining = False
        connection = worker.connection_id
        if connection is not None:
            self.connections.pop(connection, None)
            worker.connection_id = None
        self._stale.add(worker_id)
        return worker, connection

    def views(self) -> list[WorkerView]:
        """Connected workers as the scheduler sees them (``SchedulingView.workers``).

        Called by ``CoordinatorState.schedule`` once per turn that has work to
        place. The views are cached and rebuilt only for the workers that
        changed since the last call, so a turn costs O(changes), not
        O(workers), plus one list copy."""
        self._refresh()
        return list(self._views.values())

    def live_views(self) -> Collection[WorkerView]:
        """:meth:`views` without the copy: a live view of the cached views, valid
        until the registry next changes. For ``CoordinatorState.schedule``, which
        hands it to the pure policy and drops it before changing anything: copying
        10,000 views per turn cost more than the round itself on a large fleet."""
        self._refresh()
        return self._views.values()

    def live_ranked(self) -> Sequence[WorkerView]:
        """:meth:`ranked` without the copy (the registry's own list, to be read and
        dropped before the registry next changes; see :meth:`live_views`)."""
        self._refresh()
        return self._ranked_views

    def ranked(self) -> list[WorkerView]:
        """The accepting connected workers with a free slot, least capable first
        (capability rank, then worker id): the scheduler's candidates in its
        best-fit order (``SchedulingView.ranked_workers``), kept sorted as
        workers change instead of sorted every turn."""
        self._refresh()
        return list(self._ranked_views)

    def has_free_slot(self) -> bool:
        """Whether any accepting connected worker has a free slot (O(changes))."""
        self._refresh()
        return bool(self._ranked_views)

    def _refresh(self) -> None:
        """Rebuild the views of the workers marked stale since the last call."""
        if not self._stale:
            return
        for worker_id in self._stale:
            worker = self.workers.get(worker_id)
            if worker is None or worker.connection_id is None:
                self._views.pop(worker_id, None)
                self._rank_key.pop(worker_id, None)
                self._unrank(worker_id)
                continue
            view = WorkerView(
                worker_id=worker_id,
                capabilities=worker.record.capabilities,
                free_slots=worker.free_slots,
                # A worker that said bye is stopping: it finishes what it has
                # (or hands it back) and takes nothing new.
                accepting=not (worker.draining or worker.leaving),
                reserved=worker.reserved,
            )
            old = self._views.get(worker_id)
            self._views[worker_id] = view
            key = self._rank_of.get(worker_id)
            if key is None or old is None or old.capabilities is not view.capabilities:
                # New capabilities (a hello) may file it elsewhere.
                self._unrank(worker_id)
                known = self._rank_key.get(worker_id)
                if known is not None and known[0] is view.capabilities:
                    key = known[1]
                else:
                    key = (capability_rank(view.capabilities), worker_id)
                    self._rank_key[worker_id] = (view.capabilities, key)
            if view.accepting and view.free_slots > 0:
                self._file(key, view)
            else:
                self._unrank(worker_id)
        self._stale.clear()

    def _file(self, key: tuple[CapabilityRank, str], view: WorkerView) -> None:
        """Put ``view`` in the ranked lists under ``key`` (replacing its old view)."""
        index = bisect.bisect_left(self._ranked_keys, key)
        if index < len(self._ranked_keys) and self._ranked_keys[index] == key:
            self._ranked_views[index] = view
            return
        self._ranked_keys.insert(index, key)
        self._ranked_views.insert(index, view)
        self._rank_of[view.worker_id] = key

    def _unrank(self, worker_id: str) -> None:
        key = self._rank_of.pop(worker_id, None)
        if key is None:
            return
        index = bisect.bisect_left(self._ranked_keys, key)
        del self._ranked_keys[index]
        del self._ranked_views[index]
