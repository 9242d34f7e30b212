"""benchmarks/suite.py --timeline: the breakdown of a run's wall time built
from its records (pure: no fleet here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

SUITE = Path(__file__).resolve().parents[3] / "benchmarks" / "suite.py"


@pytest.fixture(scope="module")
def suite() -> Any:
    spec = importlib.util.spec_from_file_location("suite_benchmark", SUITE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["suite_benchmark"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_worker_time_adds_up_to_workers_times_wall(suite: Any) -> None:
    attempt = suite.Attempt
    # Client from 100 to 110; w1 runs two chunks with a 0.5 s gap, w2 one, w3 none.
    attempts = [
        attempt("r.r0.00000", "w1", 102.0, 102.5, 105.0, 2.0),
        attempt("r.r0.00001", "w1", 105.2, 105.5, 108.0, 2.5),
        attempt("r.r0.00002", "w2", 102.0, 103.0, 106.0, 3.0),
    ]
    created = {"r.warm.0000": 101.0, "r.r0.00000": 101.5, "r.r0.00001": 101.5, "r.r0.00002": 101.5}
    timeline = suite.build_timeline(100.0, 110.0, 101.4, created, attempts, ["w1", "w2", "w3"])
    parts = timeline.worker_seconds
    assert sum(parts.values()) == pytest.approx(3 * 10.0)
    assert parts["tests"] == pytest.approx(7.5)
    assert parts["in chunk"] == pytest.approx((2.5 - 2.0) + (2.5 - 2.5) + (3.0 - 3.0))
    assert parts["between chunks"] == pytest.approx(0.5)
    assert parts["tail"] == pytest.approx(2.0)  # w2 idle from 106 to the last end at 108
    # w1 from 100 to 102.5, w2 to 103, w3 (no chunk) until the last chunk ended.
    assert parts["before first chunk"] == pytest.approx(2.5 + 3.0 + 8.0)
    assert parts["after last chunk"] == pytest.approx(3 * 2.0)
    assert timeline.chunks == 3
    assert timeline.median_gap == pytest.approx(0.5)
    assert timeline.marks["first submission (warm-ups)"] == pytest.approx(1.0)
    assert timeline.marks["first chunk submitted"] == pytest.approx(1.5)
    assert timeline.marks["first chunk accepted"] == pytest.approx(2.5)
    assert timeline.marks["last chunk ended"] == pytest.approx(8.0)
    assert timeline.marks["client exit"] == pytest.approx(10.0)


def test_medians_of_several_timelines(suite: Any) -> None:
    one = suite.Timeline(4.0, {"client exit": 4.0}, {"tests": 1.0}, 10, 0.05)
    two = suite.Timeline(6.0, {"client exit": 6.0}, {"tests": 3.0}, 12, None)
    three = suite.Timeline(5.0, {"client exit": 5.0}, {"tests": 2.0}, 11, 0.07)
    median = suite.median_timeline([one, two, three])
    assert median.wall == 5.0
    assert median.worker_seconds == {"tests": 2.0}
    assert median.chunks == 11
    assert median.median_gap == pytest.approx(0.06)
