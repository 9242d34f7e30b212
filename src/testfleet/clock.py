"""Injected time.

Everything that expires, retries or ages (heartbeats, timeouts, retry delays,
priority aging) reads a :class:`Clock` handed to it, never ``time.time()``
directly, and waits through the clock's :meth:`~Clock.sleep`, never
``asyncio.sleep``, so unit tests drive time with
:class:`testfleet.testing.FakeClock` and never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """A source of time in seconds, and a way to wait for it to pass."""

    def now(self) -> float:
        """Return the current time in seconds (since the epoch, for a wall clock)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock (at once for 0 or less)."""
        ...


class SystemClock:
    """The real clock, used by the coordinator and worker processes."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class MonotonicClock:
    """Seconds from an arbitrary start that never go back, for code that only
    measures how long something took (``testfleet wait``): a wall clock can
    jump (NTP, suspend)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


async def wait_within(clock: Clock, awaitable: Awaitable[T], seconds: float) -> T:
    """``asyncio.wait_for`` on ``clock``'s time: ``awaitable``'s value, or
    :class:`TimeoutError` (``awaitable`` cancelled) once ``seconds`` have passed.

    Callers: the worker agent (the welcome, the acks at stop, the backoff
    pause) and the worker channel (the hello), so a fake clock drives their
    timeouts as it drives their sleeps.
    """
    work = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()
        raise
    finally:
        timer.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    raise TimeoutError
