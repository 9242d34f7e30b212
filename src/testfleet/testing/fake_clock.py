"""A clock that moves only when a test says so, or, in autojump mode, when nothing
else can happen (trio's ``MockClock(autojump_threshold=0)`` is the model).

Callers: unit tests of anything that takes a :class:`testfleet.clock.Clock`,
and :mod:`testfleet.testing.fleet`, which runs a coordinator and its workers
in one process on an autojumping clock so that heartbeats, backoff and
timeouts take no wall time at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import deque
from types import TracebackType


class FakeClock:
    """Implements :class:`testfleet.clock.Clock`; ``advance`` moves time forward and
    wakes the sleepers whose time has come.

    A sleeper is a future keyed by its deadline. :meth:`advance` is synchronous
    and needs no event loop when nobody sleeps (the coordinator's state tests
    call it between plain function calls).
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        #: (deadline, sequence, future): the sequence keeps equal deadlines in
        #: the order they slept, and futures are never compared.
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._sequence = itertools.count()
        self._slept = asyncio.Event()
        self._jumper: asyncio.Task[None] | None = None

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has moved ``seconds`` on; 0 or less only yields."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._sequence), future))
        self._slept.set()
        await future

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never backward), wake every sleeper due by
        then, and return the new time. Woken tasks run at the loop's next turn."""
        if seconds < 0:
            raise ValueError("a clock does not go backward")
        self._now += seconds
        self._wake_due()
        return self._now

    @property
    def next_deadline(self) -> float | None:
        """When the earliest sleeper wakes (None: nobody sleeps)."""
        self._drop_abandoned()
        return self._sleepers[0][0] if self._sleepers else None

    # ---------------------------------------------------------------- autojump

    def autojump(self) -> _Autojump:
        """An async context manager: while inside, whenever every task on the loop is
        blocked, time jumps to the earliest sleeper's deadline.

        "Blocked" means the loop has no callback ready to run: tasks wait on
        futures, queues, events or sleeps of this clock. A task that waits for
        a thread, a subprocess or real I/O looks blocked too, and time would
        jump under it (trio's autojump has the same rule); in-process fleets
        therefore commit inline and use in-memory channels.
        """
        return _Autojump(self)

    async def _jump_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            if not self._sleepers:
                # Nothing to jump to: wait for a sleeper instead of spinning.
                self._slept.clear()
                await self._slept.wait()
                continue
            # Yield to the back of the ready queue; jump only if, when this
            # task runs again, nothing else is ready.
            await asyncio.sleep(0)
            if _nothing_ready(loop):
                deadline = self.next_deadline
                if deadline is not None and deadline > self._now:
                    self._now = deadline
                self._wake_due()

    # ---------------------------------------------------------------- internals

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def _drop_abandoned(self) -> None:
        """Forget sleepers whose task was cancelled (a timeout that did not fire)."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)


class _Autojump:
    """What :meth:`FakeClock.autojump` returns; see there."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock

    async def __aenter__(self) -> FakeClock:
        if self._clock._jumper is not None:
            raise RuntimeError("this clock already autojumps")
        _nothing_ready(asyncio.get_running_loop())  # fail here on a loop we cannot read
        self._clock._jumper = asyncio.create_task(
            self._clock._jump_forever(), name="fake-clock-autojump"
        )
        return self._clock

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        jumper, self._clock._jumper = self._clock._jumper, None
        if jumper is not None:
            jumper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await jumper


def _nothing_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` has no callback ready to run besides the caller.

    asyncio has no public way to ask whether every task is blocked; its
    standard loop keeps the ready callbacks in ``_ready`` (the same deque since
    Python 3.4). A loop without it (uvloop) cannot autojump, and says so.
    """
    ready = getattr(loop, "_ready", None)
    if not isinstance(ready, deque):
        raise RuntimeError(f"FakeClock cannot autojump on {type(loop).__name__}")
    return not ready
