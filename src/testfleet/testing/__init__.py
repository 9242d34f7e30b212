"""Typed fakes for tests, shipped as real code: a fake clock and helpers."""

from testfleet.testing.fake_clock import FakeClock

__all__ = ["FakeClock"]
