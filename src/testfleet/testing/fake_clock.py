"""A clock that moves only when a test says so."""

from __future__ import annotations


class FakeClock:
    """Implements :class:`testfleet.clock.Clock`; ``advance`` moves time forward."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never backward) and return the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backward")
        self._now += seconds
        return self._now
