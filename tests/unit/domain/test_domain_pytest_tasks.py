"""The test record's contract: what it keeps, what it refuses, how big it can be.

* ``worker/pytest_sessions/report_data.py`` (the workers' reduction, standalone) uses
  the same caps as ``domain/pytest_tasks.py`` (the edge's validation).
* :class:`RecordBuilder` keeps every report of a test in order, subtests
  with their context, and stays within its bounds for a test with thousands
  of failing subtests (the record still validates, well inside a frame).
* A chunk's result slims its biggest records past its budget, keeping what
  the counts need.
* Verdicts: a failed subtest fails its test, even when only counted; an
  interrupted test is "interrupted". inf/nan and unbounded numbers are refused.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from testfleet.domain import pytest_limits, pytest_tasks
from testfleet.domain.pytest_tasks import (
    OmittedSubtests,
    PhaseReport,
    ReportOutcome,
    SubtestContext,
    TestLocation,
    TestOutcome,
    TestPhase,
    TestRecord,
    TestWarning,
)
from testfleet.worker.executors.pytest_run import within_budget
from testfleet.worker.pytest_sessions import report_data
from testfleet.worker.pytest_sessions.report_data import RecordBuilder


def test_the_workers_caps_are_the_records_caps() -> None:
    """One definition: the reduction reads the module the model validates with
    (a session child loads the same file by path: test_pytest_session_limits)."""
    assert report_data.limits is pytest_limits
    assert not [
        name for name in vars(report_data) if name.isupper() and hasattr(pytest_limits, name)
    ], "report_data must not define a cap of its own"


class FakeContext:
    def __init__(self, msg: str | None, kwargs: dict[str, Any]) -> None:
        self.msg = msg
        self.kwargs = kwargs


class FakeReport:
    """Just what report_data reads of a pytest TestReport."""

    def __init__(self, when: str, outcome: str, longrepr: str | None = None, **extra: Any):
        self.nodeid = "t.py::test_a"
        self.when = when
        self.outcome = outcome
        self.longrepr = longrepr
        self.duration = 0.01
        self.start, self.stop = 100.0, 100.01
        self.sections: list[tuple[str, str]] = []
        self.user_properties: list[tuple[str, str]] = []
        self.__dict__.update(extra)

    @property
    def longreprtext(self) -> str:
        return self.longrepr or ""


class SubtestReport(FakeReport):
    """Named as pytest's: report_data tells subtest reports by class name."""

    def __init__(self, outcome: str, longrepr: str | None, context: FakeContext) -> None:
        super().__init__("call", outcome, longrepr)
        self.context = context


def builder() -> RecordBuilder:
    return RecordBuilder("t.py::test_a", {"path": "t.py", "lineno": 0, "domain": "test_a"}, [])


def test_a_test_with_thousands_of_long_failing_subtests_stays_within_its_bounds() -> None:
    build = builder()
    build.add(FakeReport("setup", "passed"))
    failure = "x" * 20_000 + "\nE   AssertionError: the crash line\nt.py:9: AssertionError"
    kwargs = {f"key{k}-" + "k" * 300: "v" * 2000 for k in range(70)}
    for index in range(10_000):
        build.add(
            SubtestReport("failed", failure, FakeContext("m" * 20_000, {"i": index, **kwargs}))
        )
    for _ in range(5_000):
        build.add(SubtestReport("passed", None, FakeContext(None, {"i": 0})))
    build.add(FakeReport("call", "failed", "contains 10000 failed subtests"))
    build.add(FakeReport("teardown", "passed"))

    record = TestRecord.model_validate(build.record())

    subtests = [p for p in record.phases if p.subtest is not None]
    assert (
        sum(p.outcome is ReportOutcome.FAILED for p in subtests) == pytest_limits.MAX_SUBTESTS_KEPT
    )
    assert (
        sum(p.outcome is ReportOutcome.PASSED for p in subtests) == pytest_limits.MAX_SUBTESTS_KEPT
    )
    assert record.omitted_subtests == OmittedSubtests(
        failed=10_000 - pytest_limits.MAX_SUBTESTS_KEPT,
        passed=5_000 - pytest_limits.MAX_SUBTESTS_KEPT,
    )
    # The test's own reports are all there, in order, around its subtests.
    own = [(p.when.value, p.outcome.value) for p in record.phases if p.subtest is None]
    assert own == [("setup", "passed"), ("call", "failed"), ("teardown", "passed")]
    # Past the text budget a subtest keeps its crash line and a short description.
    last = [p for p in subtests if p.outcome is ReportOutcome.FAILED][-1]
    assert last.longrepr.endswith("E   AssertionError: the crash line\nt.py:9: AssertionError")
    assert len(last.longrepr) <= pytest_limits.LEAN_LONGREPR_CHARS
    assert last.sections == []
    assert last.subtest is not None
    assert len(last.subtest.kwargs) <= pytest_limits.LEAN_SUBTEST_KWARGS
    size = len(record.model_dump_json())
    assert size < 16 * 1024 * 1024, size  # a quarter of a 64 MiB frame
    assert record.outcome is TestOutcome.FAILED


def test_a_rerun_in_place_keeps_the_last_try_and_reports_are_read_after_pytests_hooks() -> None:
    build = builder()
    for outcome in ("failed", "passed"):
        build.restart()  # the session child restarts at each setup report
        build.add(FakeReport("setup", "passed"))
        build.add(FakeReport("call", "rerun" if outcome == "failed" else "passed"))
        build.add(FakeReport("teardown", "passed"))
    record = TestRecord.model_validate(build.record())
    assert [p.outcome for p in record.phases] == [ReportOutcome.PASSED] * 3


def test_plugin_attributes_travel_when_they_are_small_plain_data() -> None:
    report = FakeReport(
        "call",
        "passed",
        note={"a": [1, 2.5, None, "x"]},
        not_data=object(),
        not_finite=math.nan,
        too_big="y" * (pytest_limits.MAX_REPORT_EXTRA_CHARS + 1),
    )
    entry = report_data.phase_entry(report)
    assert entry["extras"] == {"note": {"a": [1, 2.5, None, "x"]}}
    assert PhaseReport.model_validate(entry).extras == {"note": {"a": [1, 2.5, None, "x"]}}
    # A record naming pytest's own fields as extras is refused at the edge.
    with pytest.raises(ValidationError, match="a field of pytest's own reports"):
        PhaseReport.model_validate({**entry, "extras": {"outcome": "passed"}})


def test_a_results_records_are_slimmed_biggest_first_past_the_budget() -> None:
    def record(name: str, text_size: int) -> TestRecord:
        return TestRecord(
            nodeid=f"t.py::{name}",
            location=TestLocation(path="t.py"),
            phases=[
                PhaseReport(
                    when=TestPhase.CALL,
                    outcome=ReportOutcome.FAILED,
                    longrepr="a" * text_size + "\nE   ValueError: end",
                    sections=[("Captured stdout call", "out" * 1000)],
                )
            ],
        )

    records = [record("small", 10), record("big", 15_000), record("mid", 5_000)]
    sizes = [len(r.model_dump_json()) for r in records]
    kept = within_budget(records, sum(sizes) - 1)
    # Only the biggest needed slimming.
    assert (kept[0], kept[2]) == (records[0], records[2])
    big = kept[1].phases[0]
    assert big.sections == []
    assert big.longrepr.endswith("E   ValueError: end")
    assert big.outcome is ReportOutcome.FAILED
    assert within_budget(records, sum(sizes)) == records


def subtest(outcome: ReportOutcome, **fields: Any) -> PhaseReport:
    return PhaseReport(
        when=TestPhase.CALL, outcome=outcome, subtest=SubtestContext(msg="m"), **fields
    )


def own(when: TestPhase, outcome: ReportOutcome) -> PhaseReport:
    return PhaseReport(when=when, outcome=outcome)


FAILED, PASSED, SKIPPED = ReportOutcome.FAILED, ReportOutcome.PASSED, ReportOutcome.SKIPPED


@pytest.mark.parametrize(
    ("phases", "omitted", "verdict"),
    [
        # unittest leaves the test's own call passed when a subtest fails
        ([subtest(FAILED), own(TestPhase.CALL, PASSED)], None, "failed"),
        ([subtest(PASSED), own(TestPhase.CALL, PASSED)], None, "passed"),
        ([subtest(SKIPPED), own(TestPhase.CALL, PASSED)], None, "passed"),
        ([subtest(FAILED), own(TestPhase.TEARDOWN, FAILED)], None, "error"),
        ([own(TestPhase.CALL, PASSED)], OmittedSubtests(failed=1), "failed"),
        ([own(TestPhase.CALL, PASSED)], OmittedSubtests(passed=9), "passed"),
    ],
)
def test_a_failed_subtest_fails_its_test(
    phases: list[PhaseReport], omitted: OmittedSubtests | None, verdict: str
) -> None:
    record = TestRecord(
        nodeid="t.py::test_a",
        location=TestLocation(path="t.py"),
        phases=phases,
        omitted_subtests=omitted,
    )
    assert record.outcome is TestOutcome(verdict)


def test_an_interrupted_test_may_have_no_report_others_need_one() -> None:
    stopped = TestRecord.model_validate(
        {
            "nodeid": "t.py::test_a",
            "location": {"path": "t.py"},
            "interrupted": {"kind": "exit", "message": "bye", "returncode": 3},
        }
    )
    assert stopped.outcome is TestOutcome.INTERRUPTED
    assert not stopped.outcome.is_failure
    with pytest.raises(ValidationError, match="needs at least one report"):
        TestRecord.model_validate({"nodeid": "t.py::test_a", "location": {"path": "t.py"}})


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (PhaseReport, {"when": "call", "outcome": "passed", "duration": math.inf}),
        (PhaseReport, {"when": "call", "outcome": "passed", "start": math.nan}),
        (TestLocation, {"path": "t.py", "lineno": 2**31}),
        (TestWarning, {"message": "m", "category": "W", "count": 2**31}),
        (OmittedSubtests, {"passed": -1}),
        (OmittedSubtests, {"failed": 2**31}),
        (pytest_tasks.SessionInfo, {"collected": 2**63}),
        (pytest_tasks.Interruption, {"kind": "exit", "returncode": 2**31}),
    ],
)
def test_non_finite_and_unbounded_numbers_are_refused(model: Any, data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)


def test_a_record_with_more_text_than_any_worker_sends_is_refused() -> None:
    text = "x" * pytest_limits.MAX_LONGREPR_CHARS
    phases = [
        PhaseReport(when=TestPhase.CALL, outcome=ReportOutcome.FAILED, longrepr=text)
        for _ in range(pytest_limits.MAX_RECORD_TEXT_CHARS // pytest_limits.MAX_LONGREPR_CHARS + 1)
    ]
    with pytest.raises(ValidationError, match="characters of text"):
        TestRecord(nodeid="t.py::test_a", location=TestLocation(path="t.py"), phases=phases)
