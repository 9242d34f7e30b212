"""The coordinator raises its open-file limit at start so a 1,000-worker fleet fits.

Fakes stand in for ``resource.getrlimit``/``setrlimit``: the test process's
own limit is left alone.
"""

from __future__ import annotations

import logging
import resource

import pytest

from testfleet.coordinator.startup import raise_file_limit


class Limits:
    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.soft, self.hard, self.refuse = soft, hard, refuse
        self.set_to: list[tuple[int, int]] = []

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def set(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if self.refuse:
            raise ValueError("not allowed")
        self.set_to.append(limits)
        self.soft = limits[0]


def test_a_low_soft_limit_is_raised_to_what_is_wanted() -> None:
    limits = Limits(1024, 1_048_576)
    assert raise_file_limit(11_256, limits.get, limits.set) == (1024, 11_256)
    assert limits.set_to == [(11_256, 1_048_576)]


def test_the_hard_limit_caps_it_and_the_shortfall_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = Limits(1024, 4096)
    with caplog.at_level(logging.WARNING):
        assert raise_file_limit(11_256, limits.get, limits.set) == (1024, 4096)
    assert limits.set_to == [(4096, 4096)]
    assert "open-file limit is 4096" in caplog.text
    assert "ulimit -Hn" in caplog.text


def test_a_high_enough_limit_is_left_alone() -> None:
    limits = Limits(20_000, 20_000)
    assert raise_file_limit(11_256, limits.get, limits.set) == (20_000, 20_000)
    assert limits.set_to == []


def test_an_unlimited_hard_limit_gives_what_is_wanted() -> None:
    limits = Limits(1024, resource.RLIM_INFINITY)
    assert raise_file_limit(5000, limits.get, limits.set) == (1024, 5000)


def test_a_refused_raise_keeps_the_old_limit_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = Limits(1024, 4096, refuse=True)
    with caplog.at_level(logging.WARNING):
        assert raise_file_limit(11_256, limits.get, limits.set) == (1024, 1024)
    assert "could not raise the open-file limit" in caplog.text
