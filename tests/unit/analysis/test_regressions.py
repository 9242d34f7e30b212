"""Regression detection on synthetic histories (pure: no store, no clock)."""

from __future__ import annotations

import random

import pytest

from testfleet.analysis.regressions import (
    Figure,
    RegressionSettings,
    RegressionStatus,
    Sample,
    SeriesKey,
    SeriesKind,
    baseline_and_noise,
    find_regressions,
)

THROUGHPUT = SeriesKey(SeriesKind.BENCHMARK, "bert", Figure.THROUGHPUT, (("batch_size", "8"),))
LATENCY = SeriesKey(SeriesKind.BENCHMARK, "bert", Figure.LATENCY, (("batch_size", "8"),))
TEST = SeriesKey(SeriesKind.TEST, "tests/test_a.py::test_x", Figure.TEST_DURATION)


def history(key: SeriesKey, values: list[float]) -> list[Sample]:
    return [Sample(key, float(i), value, order=i) for i, value in enumerate(values)]


def noisy(n: int, level: float, spread: float = 0.02, seed: int = 1) -> list[float]:
    """``n`` runs around ``level`` with about ``spread`` relative noise (deterministic)."""
    rng = random.Random(seed)
    return [level * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def test_a_sustained_15_percent_throughput_drop_is_flagged() -> None:
    values = noisy(12, 100.0) + noisy(4, 85.0, seed=2)
    (regression,) = find_regressions(history(THROUGHPUT, values))
    assert regression.status is RegressionStatus.OPEN
    assert regression.started == 12.0
    assert regression.worse_runs == 4
    assert 98 < regression.baseline < 102
    assert regression.change_percent < -10


def test_a_sustained_15_percent_latency_rise_is_flagged() -> None:
    values = noisy(12, 10.0) + noisy(3, 11.5, seed=3)
    (regression,) = find_regressions(history(LATENCY, values))
    assert regression.started == 12.0
    assert regression.change_percent > 10


def test_a_3_percent_change_inside_the_noise_is_not_flagged() -> None:
    values = noisy(12, 100.0, spread=0.04) + noisy(10, 97.0, spread=0.04, seed=4)
    assert find_regressions(history(THROUGHPUT, values)) == []


def test_a_big_change_within_a_very_noisy_series_is_not_flagged() -> None:
    # +/-30 % noise: a 15 % drop is within 3 sigma.
    values = noisy(20, 100.0, spread=0.3) + noisy(3, 85.0, spread=0.01, seed=5)
    assert find_regressions(history(THROUGHPUT, values)) == []


def test_a_tiny_change_on_a_steady_series_is_not_flagged() -> None:
    values = [100.0] * 10 + [98.0] * 5  # far outside the noise (zero), under 10 %
    assert find_regressions(history(THROUGHPUT, values)) == []


def test_a_single_spike_is_not_flagged() -> None:
    values = noisy(12, 100.0)
    values.insert(8, 50.0)
    values.append(40.0)  # the last run is bad too: unconfirmed, not flagged
    assert find_regressions(history(THROUGHPUT, values)) == []


def test_a_step_that_recovers_is_resolved() -> None:
    values = noisy(10, 100.0) + noisy(3, 80.0, seed=6) + noisy(5, 100.0, seed=7)
    assert find_regressions(history(THROUGHPUT, values)) == []
    (regression,) = find_regressions(history(THROUGHPUT, values), include_resolved=True)
    assert regression.status is RegressionStatus.RESOLVED
    assert (regression.started, regression.last_worse, regression.resolved) == (10.0, 12.0, 13.0)


def test_a_long_regression_stays_open_against_the_old_baseline() -> None:
    values = noisy(10, 100.0) + noisy(40, 80.0, seed=8)
    (regression,) = find_regressions(history(THROUGHPUT, values))
    assert regression.worse_runs == 40
    assert 98 < regression.baseline < 102


def test_too_few_runs_judge_nothing() -> None:
    assert find_regressions(history(THROUGHPUT, [100, 100, 100, 50, 50])) == []


def test_samples_in_any_order_and_series_are_kept_apart() -> None:
    drop = history(THROUGHPUT, [*noisy(10, 100.0), 80.0, 80.0])
    steady = history(LATENCY, noisy(12, 10.0))
    mixed = list(reversed(drop + steady))
    (regression,) = find_regressions(mixed)
    assert regression.series == THROUGHPUT


def test_test_durations_need_a_tenth_of_a_second_by_default() -> None:
    tiny = history(TEST, [0.010] * 10 + [0.020] * 3)  # +100 %, but 10 ms
    assert find_regressions(tiny) == []
    slow = history(TEST, [*noisy(10, 2.0), 2.5, 2.6])
    (regression,) = find_regressions(slow)
    assert regression.series == TEST


def test_confirm_one_flags_a_single_run() -> None:
    values = [*noisy(10, 100.0), 50.0]
    assert len(find_regressions(history(THROUGHPUT, values), RegressionSettings(confirm=1))) == 1


def test_non_finite_figures_are_skipped() -> None:
    values = [*noisy(10, 100.0), float("nan"), 100.0]
    assert find_regressions(history(THROUGHPUT, values)) == []


def test_baseline_and_noise_ignore_one_outlier() -> None:
    baseline, noise = baseline_and_noise([10, 10, 11, 9, 10, 1000])
    assert baseline == 10
    assert noise == pytest.approx(0.7413)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("window", 1),
        ("min_runs", 1),
        ("threshold", -0.1),
        ("noise_k", float("nan")),
        ("confirm", 0),
    ],
)
def test_bad_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        RegressionSettings(**{field: value})  # type: ignore[arg-type]
