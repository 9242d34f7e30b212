"""The coordinator's one writer: a loop that applies events, schedules, commits, then acts.

Callers: the app's lifespan starts :meth:`CoordinatorLoop.run`; API handlers
and the worker endpoint call :meth:`post` or the ``submit``/``cancel``/``drain``
helpers. Each turn takes every queued event, applies them to
:class:`CoordinatorState`, runs the scheduler once, commits the turn's writes in
one DuckDB transaction (group commit: events arriving during a commit wait for
the next turn, so batches grow with load), and only then sends messages and
answers requests — nothing is acknowledged before it is durable.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from testfleet.clock import Clock
from testfleet.coordinator.connections import ConnectionRegistry
from testfleet.coordinator.events import (
    Accepted,
    CancelTask,
    DrainWorker,
    Event,
    Refused,
    SubmitTasks,
    Tick,
)
from testfleet.coordinator.state import CoordinatorState
from testfleet.domain.records import WriteBatch
from testfleet.domain.task import TaskSpec
from testfleet.store import Store

log = logging.getLogger(__name__)

#: Bound one turn so a flood of events cannot starve sends for long.
MAX_EVENTS_PER_TURN = 20_000


class CoordinatorUnavailableError(RuntimeError):
    """The loop stopped (store failure or shutdown); the request was not applied."""


@dataclass(slots=True)
class FutureReply:
    """A :class:`~testfleet.coordinator.events.Reply` backed by an asyncio future."""

    future: asyncio.Future[object]

    def resolve(self, value: object) -> None:
        if not self.future.done():
            self.future.set_result(value)


@dataclass(slots=True)
class TurnStats:
    """Counters for /metrics and the dispatch benchmark."""

    turns: int = 0
    events: int = 0
    commits: int = 0
    commit_seconds: float = 0.0


class CoordinatorLoop:
    """Owns the event queue; see the module docstring."""

    def __init__(
        self,
        state: CoordinatorState,
        store: Store,
        clock: Clock,
        connections: ConnectionRegistry,
    ) -> None:
        self.state = state
        self.store = store
        self.clock = clock
        self.connections = connections
        self.stats = TurnStats()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._stopped = False
        self.failure: BaseException | None = None

    def post(self, event: Event) -> None:
        """Queue an event for the next turn (never blocks)."""
        if self._stopped:
            raise CoordinatorUnavailableError(self._why_stopped())
        self._events.put_nowait(event)

    async def _request(
        self, make: type[SubmitTasks | CancelTask | DrainWorker], arg: object
    ) -> Accepted | Refused:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.post(make(arg, FutureReply(future)))  # type: ignore[arg-type]
        answer = await future
        assert isinstance(answer, Accepted | Refused)
        return answer

    async def submit(self, specs: list[TaskSpec]) -> Accepted | Refused:
        """Queue tasks; returns once they are committed (or refused as a whole)."""
        return await self._request(SubmitTasks, specs)

    async def cancel(self, task_id: str) -> Accepted | Refused:
        return await self._request(CancelTask, task_id)

    async def drain(self, worker_id: str) -> Accepted | Refused:
        return await self._request(DrainWorker, worker_id)

    async def run(self) -> None:
        """Apply events until cancelled. A store failure stops the loop (fail-stop):
        memory may then be ahead of the file, and a restart recovers from the file."""
        try:
            while True:
                events = [await self._events.get()]
                while len(events) < MAX_EVENTS_PER_TURN:
                    try:
                        events.append(self._events.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                await self._turn(events)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failure = exc
            log.critical("coordinator loop stopped: %s", exc, exc_info=True)
            raise
        finally:
            self._stopped = True
            self._fail_waiting_requests()

    async def _turn(self, events: list[Event]) -> None:
        now = self.clock.now()
        for event in events:
            self.state.handle(event, now)
        self.state.schedule(now)
        effects = self.state.take_effects()
        if effects.batch:
            await self._commit(effects.batch)
        for connection_id, message in effects.sends:
            self.connections.send(connection_id, message)
        for connection_id, error in effects.closes:
            self.connections.close(connection_id, error)
        for reply, value in effects.replies:
            reply.resolve(value)
        self.stats.turns += 1
        self.stats.events += len(events)

    async def _commit(self, batch: WriteBatch) -> None:
        started = self.clock.now()
        await asyncio.to_thread(self.store.write, batch)
        self.stats.commits += 1
        self.stats.commit_seconds += max(0.0, self.clock.now() - started)

    async def tick_forever(self, interval: float) -> None:
        """Post a :class:`Tick` every ``interval`` seconds (timers live in state)."""
        while not self._stopped:
            await asyncio.sleep(interval)
            if not self._stopped:
                self.post(Tick())

    async def flush(self) -> None:
        """Apply whatever is queued now (used at shutdown so nothing accepted is dropped)."""
        events: list[Event] = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except asyncio.QueueEmpty:
                break
        if events or self.state.has_pending_effects():
            await self._turn(events)

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
