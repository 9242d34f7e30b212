"""Report shapes beyond one setup, call and teardown, recorded as a worker records
them and replayed as ``pytest --fleet`` replays them, beside the serial run:
subtests (``unittest.TestCase.subTest`` and pytest's ``subtests`` fixture),
attributes plugins set on reports, repeated warnings, ``-rP`` output,
``--durations`` and strict xfail. Each comparison is on pytest's own output:
the summary line, the ``-r`` lines, the JUnit totals and cases, the exit code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from replay_harness import Run, make_project, read_records, serial_and_replayed

from testfleet.domain.pytest_tasks import TestOutcome

SUBTESTS = """
import unittest

import pytest


class TestUnit(unittest.TestCase):
    def test_all_pass(self):
        for i in range(3):
            with self.subTest(i=i):
                pass

    def test_some_fail(self):
        for i in range(4):
            with self.subTest("odd", i=i):
                print(f"subtest {i}")
                self.assertEqual(i % 2, 0)

    def test_skip_in_a_subtest(self):
        for i in range(2):
            with self.subTest(i=i):
                if i:
                    self.skipTest("not on one")

    def test_fails_itself_after_subtests(self):
        with self.subTest(k="a"):
            pass
        self.fail("its own failure")


def test_fixture_pass_and_fail(subtests):
    for i in range(3):
        with subtests.test(msg="check", i=i):
            print("out", i)
            assert i != 1


def test_fixture_skip_and_xfail(subtests):
    with subtests.test("skipping"):
        pytest.skip("skipped subtest")
    with subtests.test("xfailing"):
        pytest.xfail("expected")
    with subtests.test("fine"):
        pass


def test_fixture_all_pass(subtests):
    for name in ["a", "b"]:
        with subtests.test(name=name):
            pass


@pytest.fixture
def broken():
    yield
    raise RuntimeError("teardown broke")


def test_subtests_then_a_teardown_error(subtests, broken):
    with subtests.test():
        assert False


def test_plain():
    pass
"""


def assert_same(serial: Run, replayed: Run) -> None:
    assert replayed.counts() == serial.counts(), replayed.stdout
    assert replayed.returncode == serial.returncode
    assert replayed.junit_totals() == serial.junit_totals()
    assert replayed.junit_cases() == serial.junit_cases()
    assert replayed.short_summary() == serial.short_summary(), replayed.stdout


@pytest.mark.parametrize("verbosity", [[], ["-v"]], ids=["quiet", "verbose"])
def test_subtests_count_and_list_as_in_the_serial_run(tmp_path: Path, verbosity: list[str]):
    project = make_project(tmp_path, {"test_subtests.py": SUBTESTS})
    serial, replayed = serial_and_replayed(project, ["-rA", *verbosity])

    assert_same(serial, replayed)
    # Sanity: the suite has the shapes it was written for.
    assert serial.counts()["failed"] >= 5, serial.stdout
    assert any(line.startswith("SUBFAILED[odd] (i=1)") for line in serial.short_summary())
    if verbosity:
        assert serial.counts()["subtests passed"] >= 8, serial.stdout
    # -rA's PASSES section shows a subtest's captured output as serially.
    assert replayed.section("PASSES") == serial.section("PASSES")
    records = {r.nodeid.rpartition("::")[2]: r for r in read_records(project)}
    # Every report is kept, setup included; a failed subtest fails its test.
    some_fail = records["test_some_fail"]
    assert some_fail.phases[0].when.value == "setup"
    assert sum(p.subtest is not None for p in some_fail.phases) == 4
    assert some_fail.outcome is TestOutcome.FAILED
    assert records["test_all_pass"].outcome is TestOutcome.PASSED
    assert records["test_subtests_then_a_teardown_error"].outcome is TestOutcome.ERROR


def test_more_subtests_than_a_record_keeps_still_count_as_in_the_serial_run(tmp_path: Path):
    """Past MAX_SUBTESTS_KEPT a worker only counts a test's passing subtests;
    the replay makes stand-ins, so the totals stay the serial run's."""
    suite = """
    def test_many(subtests):
        for i in range(4096 + 7):
            with subtests.test(i=i):
                assert i not in (5, 4100)
    """
    project = make_project(tmp_path, {"test_many.py": suite})
    serial, replayed = serial_and_replayed(project, ["-v", "-rf"])

    assert_same(serial, replayed)
    assert serial.counts() == {"failed": 3, "subtests passed": 4101}
    (record,) = read_records(project)
    assert record.omitted_subtests is not None
    assert record.omitted_subtests.passed == 4101 - 4096


PLUGINS_AND_WARNINGS = {
    "conftest.py": """
        import pytest


        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_makereport(item, call):
            report = yield
            # What a plugin leaves on a report for its own summary.
            report.fleet_note = {"when": call.when, "test": item.name}
            report.not_plain_data = object()
            return report


        def pytest_terminal_summary(terminalreporter):
            notes = sorted(
                f"{r.fleet_note['test']}/{r.fleet_note['when']}"
                for reports in terminalreporter.stats.values()
                for r in reports
                if hasattr(r, "fleet_note")
            )
            terminalreporter.write_line("NOTES " + " ".join(notes))
        """,
    "test_shapes.py": """
        import time
        import warnings

        import pytest


        def test_warns_the_same_warning_three_times():
            # pytest shows every DeprecationWarning ("always"), so each counts.
            for _ in range(3):
                warnings.warn("again", DeprecationWarning)


        def test_warns_two_kinds():
            warnings.warn("old api", DeprecationWarning)
            warnings.warn("careful", RuntimeWarning)


        def test_expected_warning_is_not_counted():
            with pytest.warns(UserWarning, match="expected"):
                warnings.warn("expected", UserWarning)


        @pytest.mark.filterwarnings("ignore::UserWarning")
        def test_ignored_warning():
            warnings.warn("ignored", UserWarning)


        def test_prints():
            print("captured stdout of a passing test")


        def test_slow():
            time.sleep(0.05)


        @pytest.mark.xfail(strict=True, reason="must fail")
        def test_xpass_strict():
            pass


        @pytest.mark.xfail(reason="known")
        def test_xfail():
            assert 0
        """,
}


def test_plugin_attributes_warnings_output_and_durations_replay_as_serially(tmp_path: Path):
    project = make_project(tmp_path, PLUGINS_AND_WARNINGS)
    args = ["-rA", "--durations=3", "--durations-min=0.04"]
    serial, replayed = serial_and_replayed(project, args)

    assert_same(serial, replayed)
    assert serial.counts()["warning"] == 5, serial.stdout
    assert replayed.section("warnings summary") == serial.section("warnings summary")
    assert replayed.section("PASSES") == serial.section("PASSES")
    assert "captured stdout of a passing test" in replayed.section("PASSES")
    slow = ("call", "suite/test_shapes.py::test_slow")
    assert replayed.durations() == serial.durations() == [slow]
    # Attributes plugins set travel when they are plain data (the others stay behind).
    notes = [line for line in serial.stdout.splitlines() if line.startswith("NOTES ")]
    assert notes
    assert notes == [line for line in replayed.stdout.splitlines() if line.startswith("NOTES ")]
    assert "test_prints/call" in notes[0]


def test_more_distinct_warnings_than_a_record_keeps_still_count(tmp_path: Path):
    suite = """
    import warnings


    def test_many_warnings():
        for i in range(70):
            warnings.warn(f"warning number {i}", UserWarning)
    """
    project = make_project(tmp_path, {"test_warnings.py": suite})
    serial, replayed = serial_and_replayed(project, [])

    assert serial.counts() == {"passed": 1, "warning": 70}
    assert replayed.counts() == serial.counts()
    (record,) = read_records(project)
    assert len(record.warnings) == 64
    assert record.warnings_omitted == 6
