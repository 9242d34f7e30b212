"""The batch-size sweep with a fake ``measure``: growth, out of memory, plateau, errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.autobatch import (
    StopReason,
    Trial,
    auto_batch_sizes,
    best_batch_size,
    planned_batch_sizes,
    sweep,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def fake_measure(
    curve: dict[int, float], oom_from: int | None = None, fail_at: int | None = None
) -> tuple[Callable[[int], Trial], list[int]]:
    asked: list[int] = []

    def measure(size: int) -> Trial:
        asked.append(size)
        if oom_from is not None and size >= oom_from:
            return Trial(size, error_class=ErrorClass.OUT_OF_MEMORY)
        if fail_at == size:
            return Trial(size, error_class=ErrorClass.TASK_FAILURE)
        return Trial(size, throughput=curve[size])

    return measure, asked


def test_auto_sizes_are_powers_of_two_up_to_the_maximum() -> None:
    assert auto_batch_sizes(1) == [1]
    assert auto_batch_sizes(8) == [1, 2, 4, 8]
    assert auto_batch_sizes(12) == [1, 2, 4, 8]
    assert planned_batch_sizes("auto", 5) == [1, 2, 4]
    assert planned_batch_sizes([4, 1], 1) == [1, 4]  # an explicit list ignores the maximum
    with pytest.raises(ValueError, match="at least 1"):
        auto_batch_sizes(0)


def test_a_growing_curve_runs_every_size() -> None:
    measure, asked = fake_measure({1: 10, 2: 19, 4: 35, 8: 60})
    result = sweep([1, 2, 4, 8], measure, stop_on_plateau=True)
    assert asked == [1, 2, 4, 8]
    assert result.stop_reason is StopReason.COMPLETED
    assert result.skipped == []


def test_out_of_memory_stops_and_keeps_the_smaller_sizes() -> None:
    measure, asked = fake_measure({1: 10, 2: 19, 4: 35}, oom_from=8)
    result = sweep([1, 2, 4, 8, 16, 32], measure, stop_on_plateau=True)
    assert asked == [1, 2, 4, 8]
    assert result.stop_reason is StopReason.OUT_OF_MEMORY
    assert [t.batch_size for t in result.trials if t.measured] == [1, 2, 4]
    assert result.skipped == [16, 32]


def test_out_of_memory_at_the_first_size_measures_nothing() -> None:
    measure, asked = fake_measure({}, oom_from=1)
    result = sweep([1, 2, 4], measure, stop_on_plateau=False)
    assert asked == [1]
    assert result.stop_reason is StopReason.OUT_OF_MEMORY
    assert not any(t.measured for t in result.trials)


def test_plateau_stops_after_two_sizes_without_a_three_percent_gain() -> None:
    # 4 -> 8 gains 2 % (a strike), 8 -> 16 gains 1 % over the best (second strike): stop.
    curve = {1: 100.0, 2: 180.0, 4: 300.0, 8: 306.0, 16: 309.0, 32: 400.0}
    measure, asked = fake_measure(curve)
    result = sweep([1, 2, 4, 8, 16, 32], measure, stop_on_plateau=True)
    assert asked == [1, 2, 4, 8, 16]
    assert result.stop_reason is StopReason.PLATEAU
    assert result.skipped == []


def test_one_flat_size_followed_by_a_gain_resets_the_count() -> None:
    curve = {1: 100.0, 2: 101.0, 4: 150.0, 8: 151.0, 16: 200.0}
    measure, asked = fake_measure(curve)
    result = sweep([1, 2, 4, 8, 16], measure, stop_on_plateau=True)
    assert asked == [1, 2, 4, 8, 16]
    assert result.stop_reason is StopReason.COMPLETED


def test_a_dip_counts_against_the_best_so_far_not_the_previous_size() -> None:
    # 8 dips; 16 recovers to just above 4's rate but not 3 % above it: two strikes.
    curve = {1: 100.0, 2: 200.0, 4: 300.0, 8: 250.0, 16: 305.0, 32: 900.0}
    measure, asked = fake_measure(curve)
    result = sweep([1, 2, 4, 8, 16, 32], measure, stop_on_plateau=True)
    assert asked == [1, 2, 4, 8, 16]
    assert result.stop_reason is StopReason.PLATEAU


def test_explicit_sizes_ignore_the_plateau() -> None:
    curve = {1: 100.0, 2: 100.0, 4: 100.0, 8: 100.0}
    measure, asked = fake_measure(curve)
    result = sweep([1, 2, 4, 8], measure, stop_on_plateau=False)
    assert asked == [1, 2, 4, 8]
    assert result.stop_reason is StopReason.COMPLETED


def test_a_plateau_on_the_last_size_is_simply_the_end() -> None:
    measure, _ = fake_measure({1: 100.0, 2: 100.0, 4: 100.0})
    assert sweep([1, 2, 4], measure, stop_on_plateau=True).stop_reason is StopReason.COMPLETED


def test_another_error_stops_the_sweep_too() -> None:
    measure, asked = fake_measure({1: 10.0, 2: 20.0}, fail_at=2)
    result = sweep([1, 2, 4], measure, stop_on_plateau=False)
    assert asked == [1, 2]
    assert result.stop_reason is StopReason.ERROR
    assert result.skipped == [4]


def test_best_batch_size_takes_the_highest_throughput_and_the_smaller_on_a_tie() -> None:
    assert best_batch_size({}) is None
    assert best_batch_size({1: 10.0, 2: 30.0, 4: 25.0}) == 2
    assert best_batch_size({8: 30.0, 2: 30.0, 4: 29.0}) == 2
