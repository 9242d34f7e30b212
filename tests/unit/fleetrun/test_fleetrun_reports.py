"""Reports to records and back: a fleet run's pytest summary, JUnit XML and
exit code match a serial run's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _pytest.reports import TestReport
from replay_harness import make_project, serial_and_replayed

from testfleet.domain.pytest_limits import MAX_LONGREPR_CHARS
from testfleet.domain.pytest_tasks import (
    PhaseReport,
    ReportOutcome,
    SkipLocation,
    TestLocation,
    TestOutcome,
    TestPhase,
    TestRecord,
)
from testfleet.fleetrun import reports
from testfleet.fleetrun.reports import FleetLongrepr, phase_report, reports_from_record

SUITE = """
import pytest


@pytest.fixture
def broken_setup():
    raise RuntimeError("setup broke")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")


def test_pass():
    pass


def helper(values):
    assert values == [1, 2, 3], "lists differ"


def test_fail():
    print("output of a failing test")
    helper([1, 2])


def test_setup_error(broken_setup):
    pass


def test_teardown_error(broken_teardown):
    pass


def test_skip():
    pytest.skip("not here")


@pytest.mark.skipif(True, reason="never on this machine")
def test_skipif():
    pass


@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert 1 == 2


def test_xfail_imperative():
    pytest.xfail("gave up")


@pytest.mark.xfail(reason="fixed already?")
def test_xpass():
    pass


@pytest.mark.xfail(reason="must fail", strict=True)
def test_xpass_strict():
    pass


def test_print():
    print("hello from the test")


def test_multiline_error():
    raise ValueError("line one\\nline two")


@pytest.mark.parametrize("n", [1, 2, 3], ids=["one", "two", "three"])
def test_param(n, record_property):
    record_property("n", n)
    assert n < 3


class TestGroup:
    def test_method(self):
        pass

    def test_chained(self):
        try:
            {}["key"]
        except KeyError as error:
            raise RuntimeError("wrapped") from error
"""


@pytest.mark.parametrize("tb", ["auto", "line"])
def test_replayed_records_summarise_like_the_serial_run(tmp_path: Path, tb: str) -> None:
    project = make_project(tmp_path, {"test_suite.py": SUITE})
    serial, replayed = serial_and_replayed(project, [f"--tb={tb}", "-rA"])
    records = [
        TestRecord.model_validate_json(line)
        for line in (project / "records.jsonl").read_text().splitlines()
    ]
    assert len(records) == 17

    assert serial.counts() == {
        "failed": 5,
        "passed": 6,
        "skipped": 2,
        "xfailed": 2,
        "xpassed": 1,
        "error": 2,
    }
    assert replayed.counts() == serial.counts()
    assert replayed.returncode == serial.returncode == 1
    assert replayed.junit_totals() == serial.junit_totals()
    # Beyond the counts: the same verdicts and crash messages per test case,
    # and the same short summary lines (each quotes the crash message).
    assert replayed.junit_cases() == serial.junit_cases()
    assert replayed.short_summary() == serial.short_summary()
    # The failures section shows the worker's text.
    assert "lists differ" in replayed.stdout.split("short test summary info")[0]
    assert "hello from the test" in replayed.stdout

    outcomes = {record.nodeid.rpartition("::")[2]: record.outcome for record in records}
    assert outcomes["test_teardown_error"] is TestOutcome.ERROR
    assert outcomes["test_xpass_strict"] is TestOutcome.FAILED
    assert outcomes["test_xfail_imperative"] is TestOutcome.XFAILED
    assert outcomes["test_param[three]"] is TestOutcome.FAILED


def passed(when: TestPhase, **fields: object) -> PhaseReport:
    return PhaseReport.model_validate({"when": when, "outcome": "passed", **fields})


def record_of(*phases: PhaseReport) -> TestRecord:
    return TestRecord(
        nodeid="tests/test_a.py::TestA::test_b[x]",
        location=TestLocation(path="tests/test_a.py", lineno=9, domain="TestA.test_b[x]"),
        keywords=["test_b[x]", "TestA", "slow"],
        phases=list(phases),
    )


def test_a_passing_record_gives_plain_passing_reports() -> None:
    record = record_of(
        passed(TestPhase.SETUP),
        passed(
            TestPhase.CALL,
            duration=1.5,
            start=10.0,
            stop=11.5,
            sections=[("Captured stdout call", "hi\n")],
            user_properties=[("n", "1")],
        ),
        passed(TestPhase.TEARDOWN),
    )
    made = reports_from_record(record)
    assert [report.when for report in made] == ["setup", "call", "teardown"]
    call = made[1]
    assert call.nodeid == record.nodeid
    assert call.location == ("tests/test_a.py", 9, "TestA.test_b[x]")
    assert call.keywords == {"test_b[x]": 1, "TestA": 1, "slow": 1}
    assert call.outcome == "passed"
    assert call.longrepr is None
    assert not hasattr(call, "wasxfail")
    assert (call.duration, call.start, call.stop) == (1.5, 10.0, 11.5)
    assert call.sections == [("Captured stdout call", "hi\n")]
    assert call.user_properties == [("n", "1")]
    assert call.capstdout == "hi\n"


def test_a_skip_becomes_pytests_tuple_under_the_local_rootdir(tmp_path: Path) -> None:
    skip = SkipLocation(path="tests/test_a.py", lineno=12, reason="Skipped: not here")
    record = record_of(
        PhaseReport(when=TestPhase.SETUP, outcome=ReportOutcome.SKIPPED, skip=skip),
        passed(TestPhase.TEARDOWN),
    )
    (setup, _teardown) = reports_from_record(record, rootdir=tmp_path)
    assert setup.longrepr == (str(tmp_path / "tests/test_a.py"), 12, "Skipped: not here")
    assert reports_from_record(record)[0].longrepr == ("tests/test_a.py", 12, "Skipped: not here")


def test_a_skip_without_its_location_falls_back_on_the_tests() -> None:
    record = record_of(
        PhaseReport(when=TestPhase.SETUP, outcome=ReportOutcome.SKIPPED),
        passed(TestPhase.TEARDOWN),
    )
    assert reports_from_record(record)[0].longrepr == ("tests/test_a.py", 10, "Skipped")


def test_xfail_reports_carry_wasxfail() -> None:
    record = record_of(
        passed(TestPhase.SETUP),
        PhaseReport(
            when=TestPhase.CALL,
            outcome=ReportOutcome.SKIPPED,
            wasxfail="known bug",
            longrepr=">       assert 0\nE       assert 0\n\nt.py:3: AssertionError",
        ),
        passed(TestPhase.TEARDOWN),
    )
    call = reports_from_record(record)[1]
    assert call.wasxfail == "known bug"
    assert isinstance(call.longrepr, FleetLongrepr)


@pytest.mark.parametrize(
    ("text", "crash"),
    [
        (
            "    def test_b():\n>       assert x == 1\nE       assert 2 == 1\n"
            "E         \nE         more\n\ntests/t.py:7: AssertionError",
            ("tests/t.py", 7, "assert 2 == 1\n  \n  more"),
        ),
        (
            "tests/t.py:7: in test_b\n    assert x == 1\nE   assert 2 == 1",
            ("tests/t.py", 7, "assert 2 == 1"),
        ),
        (
            "E   ValueError: one\n    two\n      three\n/abs/tests/t.py:7: ValueError: one",
            ("/abs/tests/t.py", 7, "ValueError: one\ntwo\n  three"),
        ),
        (
            'Traceback (most recent call last):\n  File "/abs/t.py", line 4, in test_b\n'
            "    raise KeyError(1)\nKeyError: 1",
            ("/abs/t.py", 4, "KeyError: 1"),
        ),
        ("E   RuntimeError: boom", ("", 0, "RuntimeError: boom")),
    ],
)
def test_the_crash_line_is_recovered_from_the_text(text: str, crash: tuple[str, int, str]) -> None:
    record = record_of(
        PhaseReport(when=TestPhase.SETUP, outcome=ReportOutcome.FAILED, longrepr=text),
        passed(TestPhase.TEARDOWN),
    )
    longrepr = reports_from_record(record)[0].longrepr
    assert isinstance(longrepr, FleetLongrepr)
    assert (longrepr.reprcrash.path, longrepr.reprcrash.lineno, longrepr.reprcrash.message) == crash
    assert str(longrepr) == text.strip()


def test_text_without_an_exception_stays_a_string() -> None:
    record = record_of(
        passed(TestPhase.SETUP),
        PhaseReport(
            when=TestPhase.CALL, outcome=ReportOutcome.FAILED, longrepr="[XPASS(strict)] must"
        ),
        passed(TestPhase.TEARDOWN),
    )
    assert reports_from_record(record)[1].longrepr == "[XPASS(strict)] must"


def test_a_failure_without_text_still_has_a_longrepr() -> None:
    record = record_of(PhaseReport(when=TestPhase.SETUP, outcome=ReportOutcome.FAILED))
    assert reports_from_record(record)[0].longrepr == reports.NO_FAILURE_TEXT


def make_report(when: str, outcome: str, longrepr: object = None, **extra: Any) -> TestReport:
    return TestReport(
        "t.py::test_a",
        ("t.py", 0, "test_a"),
        {"test_a": 1},
        outcome,  # type: ignore[arg-type]
        longrepr,  # type: ignore[arg-type]
        when,  # type: ignore[arg-type]
        **extra,
    )


def test_long_text_is_capped_keeping_its_end() -> None:
    text = "start\n" + "x" * (3 * MAX_LONGREPR_CHARS) + "\nE   ValueError: the end"
    phase = phase_report(make_report("call", "failed", text))
    assert len(phase.longrepr) <= MAX_LONGREPR_CHARS
    assert phase.longrepr.startswith("start\n")
    assert phase.longrepr.endswith("E   ValueError: the end")
    assert "characters cut by testfleet" in phase.longrepr


def test_sections_and_properties_are_capped() -> None:
    report = make_report(
        "call",
        "passed",
        sections=[(f"Captured log {i}", "y" * 40_000) for i in range(40)],
        user_properties=[(f"p{i}", i) for i in range(300)],
    )
    phase = phase_report(report)
    assert len(phase.sections) == 32
    assert phase.sections[-1][0] == "Captured log 39"
    assert all(len(content) <= 16 * 1024 for _, content in phase.sections)
    assert len(phase.user_properties) == 256
    assert phase.user_properties[3] == ("p3", "3")


def test_a_skip_path_is_kept_relative_to_the_rootdir(tmp_path: Path) -> None:
    skip = (str(tmp_path / "tests" / "t.py"), 3, "Skipped: no")
    phase = phase_report(make_report("setup", "skipped", skip), rootdir=tmp_path)
    assert phase.skip == SkipLocation(path="tests/t.py", lineno=3, reason="Skipped: no")
    assert phase.longrepr == ""
    elsewhere = phase_report(make_report("setup", "skipped", skip), rootdir=tmp_path / "other")
    assert elsewhere.skip is not None
    assert elsewhere.skip.path == skip[0]


def test_a_record_keeps_the_last_report_of_each_phase() -> None:
    """pytest-rerunfailures reports a test again in place; "rerun" reports
    are not pytest's outcomes and are left out."""
    made = [
        make_report("setup", "passed"),
        make_report("call", "rerun", "E   AssertionError"),
        make_report("teardown", "passed"),
        make_report("setup", "passed"),
        make_report("call", "passed"),
        make_report("teardown", "passed"),
    ]
    record = reports.test_record(
        "t.py::test_a", ("t.py", 0, "test_a"), ["test_a", "test_a", "x" * 300], made
    )
    assert [(p.when, p.outcome) for p in record.phases] == [
        (TestPhase.SETUP, ReportOutcome.PASSED),
        (TestPhase.CALL, ReportOutcome.PASSED),
        (TestPhase.TEARDOWN, ReportOutcome.PASSED),
    ]
    assert record.keywords == ["test_a"]
    assert record.location == TestLocation(path="t.py", lineno=0, domain="test_a")
    assert not record.crashed


def test_a_record_round_trips_through_json() -> None:
    made = [
        make_report("setup", "passed"),
        make_report("call", "skipped", "E   AssertionError: no", wasxfail="reason: bug"),
        make_report("teardown", "passed"),
    ]
    record = reports.test_record("t.py::test_a", ("t.py", 0, "test_a"), ["test_a"], made)
    again = TestRecord.model_validate_json(record.model_dump_json())
    assert again == record
    assert again.outcome is TestOutcome.XFAILED
    call = reports_from_record(again)[1]
    assert call.wasxfail == "reason: bug"
    assert call.skipped
