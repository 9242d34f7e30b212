"""The coordinator's one writer: a loop that applies events, schedules, commits, then acts.

Callers: the app's lifespan starts :meth:`CoordinatorLoop.run`; API handlers
and the worker endpoint call :meth:`post` or the ``submit``/``cancel``/``drain``
helpers. Each turn takes every queued event, applies them to
:class:`CoordinatorState`, runs the scheduler once, commits the turn's writes in
one store transaction (group commit: events arriving during a commit wait for
the next turn, so batches grow with load), and only then sends messages and
answers requests — nothing is acknowledged before it is durable. The loop
knows its store only as a :class:`~testfleet.store.contract.StoreWriter`.

A commit that fails for want of room on the disk (``StoreError.retryable``)
does not stop the loop: the loop is *degraded* until the same turn commits.
Meanwhile requests (submissions, cancels, drains, revokes) are refused at
:meth:`CoordinatorLoop.post` with the reason (503), nothing of the held turn is
sent or answered, worker frames still accumulate in state (workers keep their
results until acknowledged), and the committer retries the turn on a backoff
read from the injected clock. When it commits, the held turn's requests are
answered, the turns behind it follow, and requests are taken again: no restart
is needed once space returns. Any other storage failure still stops the loop
(fail-stop: memory may then be ahead of the file, and a restart recovers from
the file).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from testfleet.clock import Clock
from testfleet.coordinator.connections import ConnectionRegistry
from testfleet.coordinator.events import (
    Accepted,
    CancelOutcome,
    CancelTasks,
    DrainWorker,
    Event,
    Refused,
    Reply,
    RevokeWorker,
    ShutdownRequested,
    SubmitTasks,
    Tick,
    UndrainWorker,
    WorkerFrame,
)
from testfleet.coordinator.state import CoordinatorState
from testfleet.coordinator.turn_output import Effects
from testfleet.coordinator.worker_speed import SpeedChangeKind
from testfleet.domain.records import WriteBatch
from testfleet.domain.task import TaskSpec
from testfleet.protocol.messages import MessageType
from testfleet.store.contract import PreparedWrite, StoreWriter
from testfleet.store.errors import StoreError

log = logging.getLogger(__name__)

Offload = Callable[..., Awaitable[None]]

#: Bound one turn so a flood of events cannot starve sends for long.
MAX_EVENTS_PER_TURN = 20_000

#: A commit that found the disk full is tried again after this many seconds,
#: doubling up to :data:`RETRY_MAX_SECONDS`: soon enough that work resumes within
#: half a minute of space returning, rare enough to cost nothing while it lasts.
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0

#: Events that ask for an answer: refused while degraded, since their answer
#: could not be made durable (worker events are still taken; see the module doc).
_REQUESTS = (SubmitTasks, CancelTasks, DrainWorker, UndrainWorker, RevokeWorker)


class CoordinatorUnavailableError(RuntimeError):
    """The loop stopped (store failure or shutdown); the request was not applied."""


@dataclass(frozen=True, slots=True)
class _CommitFinished:
    """Internal: the committer is free again (queued behind the events it follows)."""


@dataclass(slots=True)
class FutureReply:
    """A :class:`~testfleet.coordinator.events.Reply` backed by an asyncio future."""

    future: asyncio.Future[object]

    def resolve(self, value: object) -> None:
        if not self.future.done():
            self.future.set_result(value)


@dataclass(slots=True)
class TurnStats:
    """Counters the stats API reports (the dispatch benchmark reads them there)."""

    turns: int = 0
    events: int = 0
    commits: int = 0
    commit_seconds: float = 0.0


class TurnObserver(Protocol):
    """Sees each turn's writes and each commit's duration (the app's
    :class:`~testfleet.coordinator.metrics.Metrics`); must be cheap: it runs on
    the loop's thread."""

    def observe_batch(self, batch: WriteBatch) -> None: ...

    def observe_commit(self, seconds: float) -> None: ...

    def observe_heartbeat_lag(self, seconds: float) -> None: ...


class CoordinatorLoop:
    """Owns the event queue; see the module docstring."""

    def __init__(
        self,
        state: CoordinatorState,
        store: StoreWriter,
        clock: Clock,
        connections: ConnectionRegistry,
        offload: Offload = asyncio.to_thread,
    ) -> None:
        """``offload`` runs a blocking commit off the loop (a thread); tests pass
        one that runs it inline, so they need no real time to pass."""
        self._offload = offload
        self.state = state
        self.store = store
        self.clock = clock
        self.connections = connections
        self.stats = TurnStats()
        self._events: asyncio.Queue[Event | _CommitFinished] = asyncio.Queue()
        self._commits: asyncio.Queue[tuple[PreparedWrite | None, Effects] | None] = asyncio.Queue()
        self._committing = False
        #: The turn being committed (its requests are answered 503 if the loop
        #: ends before it is durable).
        self._held: Effects | None = None
        self._waiting_to_retry = False
        self._stopping = False
        self._stopped = False
        self.failure: BaseException | None = None
        #: Why the last commit failed, while the loop retries it (None: healthy).
        self.degraded: str | None = None
        #: Commits retried after a failure for want of room (the stats and tests read it).
        self.commit_retries = 0
        #: Set by the app factory (metrics); None: nobody watches.
        self.observer: TurnObserver | None = None
        #: SIGTERM arrived (:meth:`begin_shutdown`): submissions are refused (503)
        #: and health says so, while what is in flight is committed.
        self.shutting_down = False
        self._aio: asyncio.AbstractEventLoop | None = None

    def post(self, event: Event) -> None:
        """Queue an event for the next turn (never blocks)."""
        if self._stopped or self.failure is not None:
            raise CoordinatorUnavailableError(self._why_stopped())
        if self.degraded is not None and isinstance(event, _REQUESTS):
            raise CoordinatorUnavailableError(self._why_degraded())
        self._events.put_nowait(event)

    async def _request(self, make: Callable[[Reply], Event]) -> object:
        """Post the event ``make`` builds around a reply; return the answer once it is
        durable."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.post(make(FutureReply(future)))
        return await future

    def begin_shutdown(self) -> None:
        """The process was asked to stop (the server's SIGTERM handler calls this,
        before it stops serving): refuse new submissions from now on and tell
        the state (:class:`ShutdownRequested`). Safe from a signal handler."""
        self.shutting_down = True
        if self._aio is not None and not self._stopped:
            self._aio.call_soon_threadsafe(self._events.put_nowait, ShutdownRequested())

    async def submit(
        self, specs: list[TaskSpec], submitted_by: str | None = None
    ) -> Accepted | Refused:
        """Queue tasks (``submitted_by``: the submitting token's id); returns once
        they are committed (or refused as a whole). Refused with
        :class:`CoordinatorUnavailableError` once shutting down."""
        if self.shutting_down:
            raise CoordinatorUnavailableError(
                "the coordinator is shutting down (SIGTERM): nothing in this request was "
                "accepted; submit it again once the coordinator is back"
            )
        answer = await self._request(lambda reply: SubmitTasks(specs, reply, submitted_by))
        assert isinstance(answer, Accepted | Refused)
        return answer

    async def cancel(self, task_ids: list[str]) -> CancelOutcome:
        """Cancel tasks in one event (see :class:`CancelTasks`); what became of each."""
        answer = await self._request(lambda reply: CancelTasks(task_ids, reply))
        assert isinstance(answer, CancelOutcome)
        return answer

    async def drain(self, worker_id: str) -> Accepted | Refused:
        answer = await self._request(lambda reply: DrainWorker(worker_id, reply))
        assert isinstance(answer, Accepted | Refused)
        return answer

    async def undrain(self, worker_id: str) -> Accepted | Refused:
        answer = await self._request(lambda reply: UndrainWorker(worker_id, reply))
        assert isinstance(answer, Accepted | Refused)
        return answer

    async def revoke(self, worker_id: str, revoked_at: float) -> Accepted:
        """Apply a revocation the store already holds (see :class:`RevokeWorker`);
        returns once the worker's new status is committed."""
        answer = await self._request(lambda reply: RevokeWorker(worker_id, revoked_at, reply))
        assert isinstance(answer, Accepted)
        return answer

    async def run(self) -> None:
        """Apply events until :meth:`stop` (or cancellation).

        Two stages run concurrently. The applier applies events to state as
        they arrive and runs the scheduler. The committer writes one turn's
        changes to the store in a thread and, only once they are durable, sends the
        turn's messages and answers its requests. One commit is in flight at a
        time; everything that happens meanwhile accumulates in state and leaves
        as the next turn the moment the committer is free (group commit: under
        load, turns grow instead of queueing). Nothing is acknowledged before it
        is on disk.

        A store failure stops the loop (fail-stop): memory may then be ahead of
        the file, and a restart recovers from the file.
        """
        self._aio = asyncio.get_running_loop()
        applier = asyncio.create_task(self._apply_loop(), name="coordinator-apply")
        committer = asyncio.create_task(self._commit_loop(), name="coordinator-commit")
        try:
            done, _ = await asyncio.wait({applier, committer}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failure = exc
            log.critical("coordinator loop stopped: %s", exc, exc_info=True)
            raise
        finally:
            for task in (applier, committer):
                task.cancel()
            await asyncio.gather(applier, committer, return_exceptions=True)
            self._stopped = True
            if self._held is not None and self._waiting_to_retry:
                # Stopped (a shutdown past its grace) between two tries of a turn
                # that could not commit: it never will now (no try is in flight,
                # which might still succeed), so its requests are answered 503.
                self.failure = self.failure or StoreError(self.degraded or "disk full")
                self._fail_replies(self._held)
            if self.failure is not None:
                # Requests applied but not committed will never be: say so.
                self._fail_replies(self.state.take_effects())
            self._fail_waiting_requests()

    def stop(self) -> None:
        """Ask :meth:`run` to finish: what was applied is committed, then it returns."""
        self._stopping = True
        if not self._stopped:
            self._events.put_nowait(Tick())  # wake the applier if it is waiting

    async def _apply_loop(self) -> None:
        while True:
            item = await self._events.get()
            items = [item]
            while len(items) < MAX_EVENTS_PER_TURN:
                try:
                    items.append(self._events.get_nowait())
                except asyncio.QueueEmpty:
                    break
            events = [i for i in items if not isinstance(i, _CommitFinished)]
            if len(events) < len(items):
                self._committing = False
            if events:
                now = self.clock.now()
                observer = self.observer
                for event in events:
                    self.state.handle(event, now)
                    # How long a heartbeat waited between its socket and this
                    # turn: the coordinator's own measure of keeping up with a
                    # large fleet (benchmarks/fleet_scale.py reads it).
                    if (
                        observer is not None
                        and isinstance(event, WorkerFrame)
                        and event.received_at is not None
                        and event.message.type is MessageType.HEARTBEAT
                    ):
                        observer.observe_heartbeat_lag(now - event.received_at)
                self.state.schedule(now)
                self.stats.events += len(events)
            if not self._committing and self.state.has_pending_effects():
                self._hand_over()
            if self._stopping and not self._committing and not self.state.has_pending_effects():
                self._commits.put_nowait(None)
                return

    def _hand_over(self) -> None:
        """Give the committer everything applied since the last turn."""
        effects = self.state.take_effects()
        for change in self.state.take_speed_changes():
            # Noticed from results, not probed: see coordinator/worker_speed.py.
            log.warning(
                "worker %s %s: speed factor %.2f against its baseline %.2f",
                change.worker_id,
                "turned slow" if change.kind is SpeedChangeKind.SLOWED else "recovered",
                change.factor,
                change.baseline,
            )
        # Encoded here, on the loop: a snapshot of records that later events
        # may change while this turn is being written.
        prepared = self.store.prepare(effects.batch) if effects.batch else None
        if self.observer is not None and effects.batch:
            self.observer.observe_batch(effects.batch)
        self._committing = True
        self.stats.turns += 1
        self._commits.put_nowait((prepared, effects))

    async def _commit_loop(self) -> None:
        while (turn := await self._commits.get()) is not None:
            prepared, effects = turn
            if prepared is not None:
                self._held = effects
                try:
                    await self._commit_until_durable(prepared)
                except asyncio.CancelledError:
                    raise  # run() answers the held turn's requests
                except BaseException as exc:
                    # Nothing of this turn may be acknowledged: answer its
                    # requests with the failure instead.
                    self.failure = exc
                    self._fail_replies(effects)
                    raise
                self._held = None
            self._act(effects)
            self._events.put_nowait(_CommitFinished())

    async def _commit_until_durable(self, prepared: PreparedWrite) -> None:
        """Commit one turn; while it fails for want of room, wait and try the same
        turn again (the transaction rolled back, so it is whole or absent).

        Raises the failure of any other kind, or of a disk still full when the
        loop is asked to stop (its requests are then answered 503, as before).
        """
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                await self._commit(prepared)
            except StoreError as exc:
                if not exc.retryable or self._stopping:
                    raise
                if self.degraded is None:
                    log.error(
                        "cannot commit to the database, refusing requests until it can "
                        "(retrying every %.0f s at most): %s",
                        RETRY_MAX_SECONDS,
                        exc,
                    )
                self.degraded = str(exc)
                # Left set if the sleep is cancelled: run() reads it afterwards.
                self._waiting_to_retry = True
                await self.clock.sleep(delay)
                self._waiting_to_retry = False
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                self.commit_retries += 1
                continue
            if self.degraded is not None:
                log.warning("the database takes commits again; accepting requests")
                self.degraded = None
            return

    def _fail_replies(self, effects: Effects) -> None:
        for reply, _ in effects.replies:
            if isinstance(reply, FutureReply) and not reply.future.done():
                reply.future.set_exception(CoordinatorUnavailableError(self._why_stopped()))

    def _act(self, effects: Effects) -> None:
        """After a turn is durable: send, close and answer."""
        for connection_id, message in effects.sends:
            self.connections.send(connection_id, message)
        for connection_id, error in effects.closes:
            self.connections.close(connection_id, error)
        for reply, value in effects.replies:
            reply.resolve(value)

    async def _commit(self, prepared: PreparedWrite) -> None:
        started = time.perf_counter()
        await self._offload(prepared.commit)
        elapsed = time.perf_counter() - started
        self.stats.commits += 1
        self.stats.commit_seconds += elapsed
        if self.observer is not None:
            self.observer.observe_commit(elapsed)

    async def tick_forever(self, interval: float) -> None:
        """Post a :class:`Tick` every ``interval`` seconds (timers live in state), until
        the loop has stopped or failed.

        A loop that failed (its store did) refuses events; the ticker then ends
        quietly rather than with that refusal, which the app's shutdown would
        otherwise raise again when it awaits the ticker.
        """
        while True:
            await self.clock.sleep(interval)
            try:
                self.post(Tick())
            except CoordinatorUnavailableError:
                return

    async def flush(self) -> None:
        """Apply and commit whatever is still queued (at shutdown, after :meth:`run`
        returned), so nothing accepted is dropped."""
        now = self.clock.now()
        while True:
            try:
                item = self._events.get_nowait()
            except asyncio.QueueEmpty:
                break
            if not isinstance(item, _CommitFinished):
                self.state.handle(item, now)
        if self.state.has_pending_effects():
            effects = self.state.take_effects()
            if effects.batch:
                await self._commit(self.store.prepare(effects.batch))
            self._act(effects)

    def _why_degraded(self) -> str:
        return (
            f"the coordinator cannot write its database ({self.degraded}); nothing was "
            "changed. It retries on its own and takes requests again once the write "
            "succeeds: free space on the database's disk, then retry this request"
        )

    def _why_stopped(self) -> str:
        if self.failure is not None:
            return f"the coordinator stopped after a storage failure: {self.failure}"
        return "the coordinator is shutting down"

    def _fail_waiting_requests(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except asyncio.QueueEmpty:
                return
            reply = getattr(event, "reply", None)
            if isinstance(reply, FutureReply) and not reply.future.done():
                reply.future.set_exception(CoordinatorUnavailableError(self._why_stopped()))
