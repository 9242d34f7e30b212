"""Prestart: chunks started from the stored test list before collection, then
reconciled with what collection finds (fleetrun.prestart and FleetRun.run).

The fake fleet of test_fleetrun_run plays the coordinator; it "runs" every
node id a chunk names, so a removed test still yields a row (a worker reports
an unknown node id as an error), which the run must drop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from test_fleetrun_run import FakeFleet, collected

from testfleet.client import FleetError
from testfleet.domain.pytest_tasks import ProjectSource, ReportOutcome, TestConfig, TestLocation
from testfleet.fleetrun.prestart import (
    SUITE_CACHE_ENV,
    prestart,
    prestart_allowed,
    reconcile,
    save_suite,
    stored_suite,
    suite_cache_path,
)
from testfleet.fleetrun.run import FleetRun
from testfleet.fleetrun.run_types import CollectedTest, RunSettings
from testfleet.fleetrun.split import SuiteTest
from testfleet.testing import FakeClock


def settings(**overrides: object) -> RunSettings:
    values: dict[str, object] = {
        "run_id": "run1",
        "project": ProjectSource(path="/srv/project"),
        "args": ["tests", "-q"],
    }
    values.update(overrides)
    return RunSettings(**values)  # type: ignore[arg-type]


def stored(*nodeids: str, hardware: tuple[str, ...] = ()) -> list[SuiteTest]:
    return [SuiteTest(n, None, hardware) for n in nodeids]


def collected_test(nodeid: str, hardware: tuple[str, ...] = ()) -> CollectedTest:
    return CollectedTest(nodeid, TestLocation(path="t.py", lineno=1, domain=nodeid), hardware)


def names(count: int) -> list[str]:
    return [f"t.py::test_{i}" for i in range(count)]


def removed_errors(nodeid: str, _worker: str, _rerun: int) -> ReportOutcome:
    """As a worker: a node id its session does not collect is an error."""
    return ReportOutcome.FAILED if "gone" in nodeid else ReportOutcome.PASSED


def run_prestarted(
    fleet: FakeFleet, before: list[str], now: list[CollectedTest]
) -> tuple[FleetRun, list[str]]:
    reported: list[str] = []
    clock = FakeClock()
    started = prestart(fleet, settings(), stored(*before))
    assert started is not None
    run = FleetRun(
        fleet,
        settings(),
        report=lambda record, _worker: reported.append(record.nodeid),
        clock=clock.now,
        sleep=clock.advance,
    )
    run.run(now, started)
    return run, reported


# ------------------------------------------------------------------ the run


def test_prestarted_chunks_cover_the_unchanged_suite_and_nothing_is_split_again() -> None:
    fleet = FakeFleet(["w1", "w2"])
    fleet.durations = {n: 0.05 for n in names(30)}
    run, reported = run_prestarted(fleet, names(30), collected(30))
    assert sorted(reported) == sorted(names(30))
    assert all(".r0.p" in task_id for task_id in fleet.documents)
    assert run.outcome.prestarted == run.outcome.chunks == len(fleet.documents)
    assert (run.outcome.dropped, run.outcome.new_tests) == (0, 0)
    assert run.outcome.split_by == "durations"


def test_a_removed_test_is_dropped_and_an_added_one_runs_in_a_later_chunk() -> None:
    fleet = FakeFleet(["w1", "w2"], removed_errors)
    before = [*names(10), "t.py::test_gone"]
    now = [*collected(10), collected_test("t.py::test_new")]
    run, reported = run_prestarted(fleet, before, now)
    # Exactly the collected tests, each once; the removed one's error row is not reported.
    assert sorted(reported) == sorted([*names(10), "t.py::test_new"])
    assert (run.outcome.dropped, run.outcome.new_tests) == (1, 1)
    later = [t for t in fleet.documents if ".r0.p" not in t]
    assert len(later) == 1
    assert TestConfig.model_validate(fleet.documents[later[0]]["config"]).node_ids == [
        "t.py::test_new"
    ]
    assert not run.outcome.not_run


def test_a_prestarted_chunk_left_with_no_collected_test_is_cancelled() -> None:
    fleet = FakeFleet(["w1"])
    fleet.hold = True  # nothing finishes before the run reconciles
    started = prestart(fleet, settings(), stored("gone.py::test_a"))
    assert started is not None
    fleet.hold = False
    clock = FakeClock()
    reported: list[str] = []
    run = FleetRun(
        fleet,
        settings(),
        report=lambda record, _worker: reported.append(record.nodeid),
        clock=clock.now,
        sleep=clock.advance,
    )
    run.run(collected(2), started)
    assert fleet.cancelled == ["run1.r0.p00000"]
    assert sorted(reported) == names(2)


def test_a_test_whose_hardware_changed_runs_again_in_a_chunk_with_the_new_requirement() -> None:
    fleet = FakeFleet(["w1", "gpu"], hardware={"gpu": ["cuda"]})
    now = [collected_test("t.py::test_0"), collected_test("t.py::test_1", ("cuda",))]
    run, reported = run_prestarted(fleet, ["t.py::test_0", "t.py::test_1"], now)
    assert sorted(reported) == ["t.py::test_0", "t.py::test_1"]
    assert run.outcome.dropped == 1
    later = [d for t, d in fleet.documents.items() if ".r0.p" not in t]
    assert [d["requirements"].get("hardware") for d in later] == [["cuda"]]


def test_an_empty_collection_cancels_every_prestarted_chunk() -> None:
    fleet = FakeFleet(["w1"])
    fleet.hold = True
    started = prestart(fleet, settings(), stored(*names(3)))
    assert started is not None
    run = FleetRun(fleet, settings(), report=lambda *_: None)
    run.run([], started)
    assert sorted(fleet.cancelled) == sorted(t for t, _ in started.chunks)


# ------------------------------------------------------------------ prestart()


def test_no_worker_means_no_prestart_and_nothing_submitted() -> None:
    fleet = FakeFleet([])
    assert prestart(fleet, settings(), stored(*names(3))) is None
    assert not fleet.documents


def test_a_refused_submission_means_no_prestart_and_cancels_what_it_may_have_made() -> None:
    class Refusing(FakeFleet):
        def submit(self, documents: Sequence[dict[str, Any]]) -> list[str]:
            # As when the answer to a committed submission is lost.
            super().submit(documents)
            raise FleetError("coordinator went away", status=503)

    fleet = Refusing(["w1"])
    assert prestart(fleet, settings(), stored(*names(3))) is None
    assert fleet.cancelled == list(fleet.documents) != []


def test_prestarted_chunks_are_split_by_the_stored_durations_over_the_slots() -> None:
    fleet = FakeFleet(["w1", "w2"])
    fleet.durations = {n: 0.01 * (i + 1) for i, n in enumerate(names(20))}
    started = prestart(fleet, settings(), stored(*names(20)))
    assert started is not None
    assert started.slots == 2
    assert started.workers == ["w1", "w2"]
    assert started.chunks[0][1].node_ids[0] == "t.py::test_19"  # longest first


# ------------------------------------------------------------------ reconcile()


def test_reconcile_expects_each_collected_test_once_even_if_stored_twice() -> None:
    fleet = FakeFleet(["w1"])
    started = prestart(fleet, settings(), stored("t.py::a", "t.py::a", "t.py::b"))
    assert started is not None
    plan = reconcile(started, [collected_test("t.py::a"), collected_test("t.py::b")])
    expected = [n for nodes in plan.expected.values() for n in nodes]
    assert sorted(expected) == ["t.py::a", "t.py::b"]
    assert plan.dropped == ["t.py::a"]
    assert not plan.new


# ------------------------------------------------------------------ the stored list


def test_the_stored_list_round_trips_and_is_keyed_by_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SUITE_CACHE_ENV, str(tmp_path))
    invoked = ["tests", "--fleet", "http://c", "--fleet-run-id", "a"]
    path = suite_cache_path(settings(), invoked)
    assert path.parent == tmp_path
    # -k and -m never reach the workers' arguments, but they select: a new key.
    assert suite_cache_path(settings(), [*invoked, "-k", "fast"]) != path
    assert suite_cache_path(settings(project=ProjectSource(path="/other")), invoked) != path
    assert suite_cache_path(settings(python="/usr/bin/python3.12"), invoked) != path
    # A new run id each time is still the same command.
    again = ["tests", "--fleet", "http://c", "--fleet-run-id", "b"]
    assert suite_cache_path(settings(), again) == path
    assert suite_cache_path(settings(), [*again[:3], "--fleet-run-id=c"]) == path
    save_suite(path, [collected_test("t.py::a"), collected_test("t.py::b", ("cuda",))])
    assert stored_suite(path) == [SuiteTest("t.py::a", None), SuiteTest("t.py::b", None, ("cuda",))]


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", '{"version": 99, "tests": []}', '{"version": 1, "tests": [1]}'],
)
def test_a_missing_or_unreadable_list_means_no_prestart(tmp_path: Path, text: str) -> None:
    path = tmp_path / "list.json"
    assert stored_suite(path) is None
    path.write_text(text)
    assert stored_suite(path) is None


def test_an_empty_stored_list_means_no_prestart(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"version": 1, "tests": []}))
    assert stored_suite(path) is None


@pytest.mark.parametrize(
    ("args", "collect_only", "allowed"),
    [
        (["tests", "-k", "x"], False, True),
        (["tests"], True, False),
        (["--lf"], False, False),
        (["--last-failed"], False, False),
        (["--sw"], False, False),
        (["--stepwise-skip"], False, False),
    ],
)
def test_prestart_only_when_the_selection_comes_from_the_arguments(
    args: list[str], collect_only: bool, allowed: bool
) -> None:
    assert prestart_allowed(args, collect_only=collect_only) is allowed
