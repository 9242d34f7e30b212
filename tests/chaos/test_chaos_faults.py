"""The chaos schedule (chaos_faults.py): replayable from its seed, every kind
early, targets that exist, faults that never overlap."""

from __future__ import annotations

import itertools

import pytest
from chaos_faults import FaultKind, make_schedule

WORKERS = ["w0", "w1", "w2"]
LINKED = ["w1", "w2"]


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    first = make_schedule(7, 120, list(FaultKind), WORKERS, LINKED)
    assert first == make_schedule(7, 120, list(FaultKind), WORKERS, LINKED)
    assert first != make_schedule(8, 120, list(FaultKind), WORKERS, LINKED)


def test_every_kind_comes_once_before_any_repeats() -> None:
    faults = make_schedule(3, 600, list(FaultKind), WORKERS, LINKED)
    assert {f.kind for f in faults[: len(FaultKind)]} == set(FaultKind)


def test_targets_exist_and_faults_do_not_overlap() -> None:
    faults = make_schedule(11, 600, list(FaultKind), WORKERS, LINKED)
    for fault in faults:
        if fault.kind.targets == "coordinator":
            assert fault.target == "coordinator"
        elif fault.kind.targets == "linked":
            assert fault.target in LINKED
        else:
            assert fault.target in WORKERS
    for before, after in itertools.pairwise(faults):
        assert after.at >= before.at + before.hold_seconds
    assert all(f.at < 600 for f in faults)


def test_link_faults_are_left_out_without_namespaced_workers() -> None:
    faults = make_schedule(5, 300, list(FaultKind), WORKERS, [])
    assert faults
    assert all(f.kind.targets != "linked" for f in faults)


def test_bad_arguments_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="seconds must be > 0"):
        make_schedule(1, 0, list(FaultKind), WORKERS, LINKED)
    with pytest.raises(ValueError, match="no fault kind has a target"):
        make_schedule(1, 10, [FaultKind.PARTITION], WORKERS, [])
