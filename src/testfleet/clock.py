"""Injected time.

Everything that expires, retries or ages (heartbeats, timeouts, retry delays,
priority aging) reads a :class:`Clock` handed to it, never ``time.time()``
directly, so unit tests drive time with :class:`testfleet.testing.FakeClock`
and never sleep.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall-clock time in seconds since the epoch."""

    def now(self) -> float:
        """Return the current time in seconds since the Unix epoch."""
        ...


class SystemClock:
    """The real clock, used by the coordinator and worker processes."""

    def now(self) -> float:
        return time.time()


class MonotonicClock:
    """Seconds from an arbitrary start that never go back, for code that only
    measures how long something took (``testfleet wait``): a wall clock can
    jump (NTP, suspend)."""

    def now(self) -> float:
        return time.monotonic()
