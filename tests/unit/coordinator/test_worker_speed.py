"""Speed factors measured from finished work (coordinator/worker_speed.py)."""

from __future__ import annotations

import math

import pytest

from testfleet.coordinator.worker_speed import (
    SpeedChangeKind,
    SpeedSettings,
    WorkerSpeeds,
)
from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.work_keys import SpeedSample, hardware_class, node_work_key, work_key

CPU = HardwareKind.CPU
CUDA = HardwareKind.CUDA


def _round(speeds: WorkerSpeeds, seconds: dict[str, float], keys: range, hw: HardwareKind = CPU):
    """Every worker runs each key once, taking ``seconds[worker]``; returns the changes."""
    changes = []
    for k in keys:
        for worker, took in seconds.items():
            change = speeds.record(worker, hw, f"simulated|k{k}", took)
            if change is not None:
                changes.append(change)
    return changes


def test_a_worker_twice_as_fast_measures_about_two_and_its_peer_about_a_half() -> None:
    speeds = WorkerSpeeds()
    _round(speeds, {"fast": 5.0, "slow": 10.0}, range(20))
    assert speeds.factor("fast") == pytest.approx(2.0, rel=0.05)
    assert speeds.factor("slow") == pytest.approx(0.5, rel=0.05)


def test_the_factor_stays_one_below_the_minimum_sample_count() -> None:
    speeds = WorkerSpeeds(SpeedSettings(min_samples=5))
    # The first worker's first sample has no peer to compare with: 4 ratios each.
    _round(speeds, {"a": 5.0, "b": 10.0}, range(4))
    assert speeds.factor("b") == 1.0
    assert speeds.status("b").samples == 4
    _round(speeds, {"a": 5.0, "b": 10.0}, range(4, 5))
    assert speeds.factor("b") < 1.0


def test_work_compares_only_within_a_hardware_class() -> None:
    speeds = WorkerSpeeds()
    # The same key: 8x faster on a GPU worker, but no CPU worker is compared with it.
    for k in range(10):
        speeds.record("cpu-a", CPU, f"k{k}", 120.0)
        speeds.record("cpu-b", CPU, f"k{k}", 120.0)
        speeds.record("gpu-a", CUDA, f"k{k}", 15.0)
    assert speeds.factor("cpu-a") == pytest.approx(1.0)
    assert speeds.factor("gpu-a") == 1.0  # never compared: no other GPU worker
    assert speeds.typical["k3"] == {CPU: pytest.approx(120.0), CUDA: pytest.approx(15.0)}


def test_a_worker_that_turns_slow_is_reported_once_and_recovers() -> None:
    speeds = WorkerSpeeds()
    peers = {"a": 10.0, "b": 10.0, "c": 10.0}
    assert _round(speeds, peers, range(0, 40)) == []
    assert speeds.factor("c") == pytest.approx(1.0)
    # Throttled: c now takes three times as long.
    changes = _round(speeds, {**peers, "c": 30.0}, range(40, 80))
    assert [(c.worker_id, c.kind) for c in changes] == [("c", SpeedChangeKind.SLOWED)]
    assert changes[0].factor < 0.6 * changes[0].baseline
    assert speeds.slowed == ["c"]
    assert speeds.status("c").slowed
    # The baseline is frozen while slow: the slow-down does not become normal.
    assert speeds.status("c").baseline == pytest.approx(1.0, rel=0.05)
    changes = _round(speeds, peers, range(80, 120))
    assert [(c.worker_id, c.kind) for c in changes] == [("c", SpeedChangeKind.RECOVERED)]
    assert speeds.slowed == []


def test_tiny_and_non_finite_samples_are_ignored() -> None:
    speeds = WorkerSpeeds()
    assert speeds.record("a", CPU, "k", 0.001) is None
    assert speeds.record("a", CPU, "k", math.nan) is None
    assert speeds.typical == {}


def test_one_outlier_does_not_move_a_measured_factor() -> None:
    speeds = WorkerSpeeds()
    _round(speeds, {"a": 10.0, "b": 10.0}, range(20))
    speeds.record("a", CPU, "k5", 1000.0)
    assert speeds.factor("a") == pytest.approx(1.0, rel=0.05)


def test_seed_replays_history_like_live_results() -> None:
    live = WorkerSpeeds()
    _round(live, {"fast": 5.0, "slow": 10.0}, range(10))
    seeded = WorkerSpeeds()
    seeded.seed(
        SpeedSample(w, CPU, f"simulated|k{k}", s)
        for k in range(10)
        for w, s in {"fast": 5.0, "slow": 10.0}.items()
    )
    assert seeded.factors == live.factors
    assert seeded.typical == live.typical


def test_keys_are_bounded() -> None:
    speeds = WorkerSpeeds(SpeedSettings(max_keys=3))
    for k in range(5):
        speeds.record("a", CPU, f"k{k}", 1.0)
    assert list(speeds.typical) == ["k2", "k3", "k4"]


@pytest.mark.parametrize(
    "settings",
    [
        {"min_samples": 0},
        {"baseline_weight": 0.0},
        {"slow_fraction": 0.9, "recover_fraction": 0.8},
    ],
)
def test_bad_settings_say_which(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(settings))):
        SpeedSettings(**settings)  # type: ignore[arg-type]


def test_work_keys_are_canonical_and_kind_prefixed() -> None:
    assert work_key(TaskType.SIMULATED, {"a": 1, "b": 2}) == work_key(
        TaskType.SIMULATED, {"b": 2, "a": 1}
    )
    assert work_key(TaskType.SIMULATED, {}) != work_key(TaskType.COMMAND, {})
    # A benchmark's key ignores fields that do not change the work.
    base = {"model": "bert-base-uncased", "batch_sizes": [1, 8], "precision": "fp16"}
    assert work_key(TaskType.BENCHMARK, base) == work_key(
        TaskType.BENCHMARK, {**base, "device": "cuda"}
    )
    assert work_key(TaskType.BENCHMARK, base) != work_key(
        TaskType.BENCHMARK, {**base, "sequence_length": 512}
    )
    assert node_work_key("path:/p", "t.py::a") == "test|path:/p|t.py::a"
    assert hardware_class([CPU, CUDA]) is CUDA
    assert hardware_class([]) is CPU


def test_a_keys_first_sample_is_its_typical_time_and_is_compared_once_a_peer_comes() -> None:
    speeds = WorkerSpeeds(SpeedSettings(min_samples=1))
    # "fast" is measured first (factor 2.0), so its first sample of a new key
    # is normalised by it: a typical worker would have taken twice as long.
    _round(speeds, {"fast": 5.0, "slow": 10.0}, range(3))
    assert speeds.factor("fast") == pytest.approx(2.0)
    assert speeds.record("fast", CPU, "simulated|new", 4.0) is None
    assert speeds.typical["simulated|new"] == {CPU: pytest.approx(4.0 * speeds.factor("fast"))}
    assert speeds.status("fast").samples == 3  # a new key gives no ratio on its own
    speeds.record("slow", CPU, "simulated|new", 8.0)
    # Now each has a ratio sample from the key: the first one was compared late.
    assert speeds.status("fast").samples == 4
    assert speeds.status("slow").samples == 4
