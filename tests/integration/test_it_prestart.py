"""``testfleet run`` starting its first chunks from the stored test list, on a
real coordinator and real workers on loopback.

The suite changes between two runs of the same command (a test removed, one
added): the second run's prestarted chunks still name the removed test, and
its counts and JUnit XML must still match plain pytest's exactly.
"""

from __future__ import annotations

import sys
from pathlib import Path

from it_compare import SERIAL_TIMEOUT, first_pass_chunks, pytest_env, run_pytest_process
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet

from testfleet.fleetrun.prestart import SUITE_CACHE_ENV

#: An upper bound for one `testfleet run` process, never an expectation.
RUN_TIMEOUT = 180

BEFORE = """
import pytest

def test_kept():
    pass

def test_removed():
    pass

@pytest.mark.parametrize("i", range(6))
def test_many(i):
    assert i != 4
"""

AFTER = """
import pytest

def test_kept():
    pass

def test_added():
    pass

@pytest.mark.parametrize("i", range(6))
def test_many(i):
    assert i != 4
"""


def test_prestarted_chunks_of_a_changed_suite_count_as_plain_pytest(
    fleet: Fleet, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\n")
    suite = project / "tests" / "test_suite.py"
    suite.write_text(BEFORE)
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    for worker in ("w1", "w2"):
        fleet.start_worker(worker, slots=1, wait=False)
    fleet.wait_for_workers(["w1", "w2"])
    env = {**pytest_env(fleet), SUITE_CACHE_ENV: str(tmp_path / "suites")}
    args = ["tests", "-p", "no:cacheprovider"]

    # The same command both times (the stored list is keyed by its arguments).
    junit = tmp_path / "fleet.xml"
    fleet_run = [
        sys.executable,
        "-m",
        "testfleet",
        "run",
        "--coordinator",
        fleet.url,
        *args,
        f"--junitxml={junit}",
    ]

    first = run_pytest_process(fleet_run, project, env, junit, RUN_TIMEOUT)
    assert first.counts == {"passed": 7, "failed": 1}, first.describe("first fleet run")
    assert "started before collection" not in first.output
    assert list((tmp_path / "suites").glob("*.json")), "the first run stored its test list"

    suite.write_text(AFTER)
    serial_xml = tmp_path / "serial.xml"
    serial = run_pytest_process(
        [sys.executable, "-m", "pytest", *args, f"--junitxml={serial_xml}"],
        project,
        env,
        serial_xml,
        SERIAL_TIMEOUT,
    )
    second = run_pytest_process(fleet_run, project, env, junit, RUN_TIMEOUT)
    both = serial.describe("serial pytest") + "\n" + second.describe("second fleet run")

    assert "1 of its tests no longer collected (dropped), 1 collected tests new" in (
        second.output
    ), both
    assert second.counts == serial.counts == {"passed": 7, "failed": 1}, both
    assert second.returncode == serial.returncode, both
    assert second.short_summary() == serial.short_summary(), both
    assert second.junit is not None, both
    assert serial.junit is not None, both
    assert second.junit.totals == serial.junit.totals, both
    assert second.junit.cases == serial.junit.cases, both
    # The removed test was really sent before collection (and dropped after).
    run_ids = {c["run_id"] for c in first_pass_chunks(fleet)}
    assert len(run_ids) == 2, run_ids
    second_chunks = [c for c in first_pass_chunks(fleet) if c["run_id"] != _run_of(first.output)]
    sent = [n for c in second_chunks for n in c["node_ids"]]
    assert "tests/test_suite.py::test_removed" in sent, second_chunks
    assert sent.count("tests/test_suite.py::test_added") == 1, second_chunks


def _run_of(output: str) -> str:
    """The run id a ``testfleet run`` printed in its summary ("run ID: ...")."""
    line = next(line for line in output.splitlines() if line.startswith("run "))
    return line.split()[1].rstrip(":")
