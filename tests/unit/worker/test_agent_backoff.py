"""Reconnect delays and the channel address: pure functions of the agent."""

from __future__ import annotations

import random

import pytest

from testfleet.worker.agent import channel_url
from testfleet.worker.backoff import backoff_delay


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    rng = random.Random(7)
    steps = [backoff_delay(n, rng, base=0.25, cap=30.0) for n in range(12)]
    for failures, delay in enumerate(steps):
        step = min(30.0, 0.25 * 2**failures)
        # Equal jitter: at least half the step, at most the whole step.
        assert step / 2 <= delay <= step
    assert max(steps) <= 30.0
    assert steps[-1] >= 15.0  # capped, not shrinking


def test_jitter_spreads_a_fleet_reconnecting_at_once() -> None:
    delays = {round(backoff_delay(5, random.Random(seed)), 6) for seed in range(100)}
    assert len(delays) > 90  # a hundred workers pick (nearly) a hundred moments


def test_same_seed_same_delays() -> None:
    first = [backoff_delay(n, random.Random(3)) for n in range(5)]
    again = [backoff_delay(n, random.Random(3)) for n in range(5)]
    assert first == again


def test_huge_failure_counts_do_not_overflow() -> None:
    assert backoff_delay(10_000, random.Random(1), cap=5.0) <= 5.0


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:8700", "ws://h:8700/api/v1/workers/connect"),
        ("http://h:8700/", "ws://h:8700/api/v1/workers/connect"),
        ("https://fleet.example:443", "wss://fleet.example:443/api/v1/workers/connect"),
        ("ws://h:1", "ws://h:1/api/v1/workers/connect"),
        ("h:8700", "ws://h:8700/api/v1/workers/connect"),
    ],
)
def test_channel_url(given: str, expected: str) -> None:
    assert channel_url(given) == expected
