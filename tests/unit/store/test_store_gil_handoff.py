"""The short switch interval a DuckDB commit runs under (``writer.gil_handoff``).

DuckDB's Python binding takes the GIL back several times per commit; the store
shortens CPython's switch interval while it commits so that the busy loop
thread hands it over sooner (measured in ``benchmarks/store_write.py
--breakdown``). These pin down that the interval is short during the commit
and restored afterwards, also when the commit fails or commits overlap.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from store_builders import attempt, task, worker

from testfleet.domain.records import WriteBatch
from testfleet.store import Store, StoreError
from testfleet.store.writer import COMMIT_SWITCH_INTERVAL_SECONDS, gil_handoff


@pytest.fixture
def default_interval() -> Iterator[float]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield 0.005
    sys.setswitchinterval(previous)


def test_a_commit_runs_at_the_short_interval_and_restores_the_previous_one(
    default_interval: float,
) -> None:
    seen: list[float] = []
    with Store(":memory:") as store:
        prepared = store.prepare(WriteBatch(workers=[worker("w1")], tasks=[task("t1")]))
        store.commit(prepared, between_statements=lambda: seen.append(sys.getswitchinterval()))
        assert store.get_task("t1") is not None
    assert seen
    assert set(seen) == {COMMIT_SWITCH_INTERVAL_SECONDS}
    assert sys.getswitchinterval() == default_interval


def test_a_failed_commit_restores_the_interval_too(default_interval: float) -> None:
    with Store(":memory:") as store, pytest.raises(StoreError, match="foreign key"):
        store.write(WriteBatch(attempts=[attempt(1, "t-missing", "w-missing")]))
    assert sys.getswitchinterval() == default_interval


def test_overlapping_handoffs_restore_the_interval_only_when_the_last_ends(
    default_interval: float,
) -> None:
    with gil_handoff():
        with gil_handoff():
            assert sys.getswitchinterval() == COMMIT_SWITCH_INTERVAL_SECONDS
        assert sys.getswitchinterval() == COMMIT_SWITCH_INTERVAL_SECONDS
    assert sys.getswitchinterval() == default_interval


def test_an_interval_already_shorter_is_kept() -> None:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)
    try:
        with gil_handoff():
            assert sys.getswitchinterval() == pytest.approx(0.0001, abs=2e-6)
    finally:
        sys.setswitchinterval(previous)
