"""Latency statistics and the timed loop: pure, no torch."""

from __future__ import annotations

import itertools

import pytest

from testfleet.worker.benchmarking.statistics import percentile, summarise
from testfleet.worker.benchmarking.timing import time_steps


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 0, 5.0),
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0], 50, 1.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        # position (n-1)*q/100 = 3*0.9 = 2.7 -> 3 + 0.7 * (4 - 3)
        ([1.0, 2.0, 3.0, 4.0], 90, 3.7),
        # 1..100: position 99*0.99 = 98.01 -> 99 + 0.01 * (100 - 99)
        ([float(v) for v in range(1, 101)], 99, 99.01),
        ([float(v) for v in range(1, 101)], 50, 50.5),
        ([10.0, 20.0, 30.0, 40.0, 50.0], 25, 20.0),
    ],
)
def test_percentile_is_linear_interpolation_between_closest_ranks(
    values: list[float], q: float, expected: float
) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_matches_numpys_default_method_on_uneven_data() -> None:
    # numpy.percentile([3, 1, 7, 15, 2], [50, 90, 99]) with method="linear"
    data = sorted([3.0, 1.0, 7.0, 15.0, 2.0])
    assert percentile(data, 50) == pytest.approx(3.0)
    assert percentile(data, 90) == pytest.approx(11.8)
    assert percentile(data, 99) == pytest.approx(14.68)


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)


def test_summarise_reports_milliseconds_percentiles_and_throughput() -> None:
    latencies_ns = [2_000_000, 4_000_000, 6_000_000, 8_000_000]  # 2, 4, 6, 8 ms
    m = summarise(latencies_ns, batch_size=8, memory_mb=123.0)
    assert m.latency_ms == pytest.approx(5.0)
    assert m.latency_p50_ms == pytest.approx(5.0)
    assert m.latency_p90_ms == pytest.approx(7.4)
    assert m.latency_p99_ms == pytest.approx(7.94)
    assert m.throughput_items_per_second == pytest.approx(8 / 0.005)
    assert m.memory_mb == 123.0
    assert m.iterations == 4


def test_summarise_percentiles_never_step_back() -> None:
    for values in itertools.permutations([1, 1, 1, 7, 3]):
        m = summarise(list(values), batch_size=1, memory_mb=0)
        assert m.latency_p99_ms >= m.latency_p90_ms >= m.latency_p50_ms


def test_summarise_a_step_below_clock_resolution_has_no_throughput() -> None:
    m = summarise([0, 0], batch_size=4, memory_mb=1)
    assert m.throughput_items_per_second == 0.0
    with pytest.raises(ValueError, match="no timed iterations"):
        summarise([], batch_size=1, memory_mb=0)


def test_time_steps_synchronises_around_every_timed_step() -> None:
    events: list[str] = []
    ticks = itertools.count(0, 10)

    def clock() -> int:
        events.append("clock")
        return next(ticks)

    latencies = time_steps(
        lambda: events.append("step"),
        warmup=2,
        iterations=3,
        synchronize=lambda: events.append("sync"),
        clock=clock,
    )
    assert latencies == [10, 10, 10]
    warmup, timed = events[:4], events[4:]
    assert warmup == ["step", "sync", "step", "sync"]
    assert timed == ["sync", "clock", "step", "sync", "clock"] * 3


def test_time_steps_needs_an_iteration() -> None:
    with pytest.raises(ValueError, match="iterations"):
        time_steps(lambda: None, warmup=0, iterations=0, synchronize=lambda: None)
