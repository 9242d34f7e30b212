"""pytest's ``TestReport`` to and from :class:`~testfleet.domain.pytest_tasks.TestRecord`.

Two directions, two callers:

* In-process (local use and tests), :func:`phase_report` and
  :func:`test_record` reduce the reports pytest made for one test to a
  record with the same code the workers' sessions run
  (:mod:`testfleet.worker.pytest_sessions.report_data`): plain data, bounded so a
  chunk of many failing tests, or a test with thousands of subtests, still
  fits in a frame.
* On the machine that started the run, the ``pytest --fleet`` plugin turns
  each record that comes back into real reports with :func:`reports_from_record`
  and feeds them to ``config.hook.pytest_runtest_logreport``. pytest's own
  terminal summary, ``-r`` short summary, JUnit XML and exit code then see
  the same reports a serial run would have made, so their counts agree
  ("2 failed, 3 passed, 1 skipped, 1 xfailed, 1 xpassed, 2 errors").
  Every report comes back as the class pytest made: a subtest's as pytest's
  ``SubtestReport`` with its context (counted as "subtests passed", listed as
  ``SUBFAILED[msg] (i=3)``), with the attributes plugins set on it.

A record keeps a failure as text (``longreprtext``), not as pytest's
structured ``ExceptionRepr``. The summaries need one thing from the
structure: the crash message (``reprcrash.message``), which the short summary
quotes after the node id and JUnit XML puts in the ``message`` attribute. It
is recovered from the text: the last block of ``E`` lines is the final
exception, as pytest's long, short and line styles print it
(:class:`FleetLongrepr`). Text without ``E`` lines (a plain string such as
``[XPASS(strict)] reason``, or a crashed test's note) stays a string, which
both summaries quote as is, as they do for a serial run.

A skip keeps pytest's ``(path, lineno, reason)`` tuple, which the skip
summary and JUnit XML unpack. Its path is absolute on the worker; given the
rootdir on both sides, it travels relative to it and comes back absolute
under the client's rootdir, so skips from different machines fold together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from _pytest._code.code import ReprFileLocation, TerminalRepr
from _pytest._io import TerminalWriter
from _pytest.reports import TestReport

from testfleet.domain.pytest_tasks import (
    OmittedSubtests,
    PhaseReport,
    ReportOutcome,
    SkipLocation,
    SubtestContext,
    TestLocation,
    TestPhase,
    TestRecord,
)
from testfleet.worker.pytest_sessions import report_data

try:  # pytest 9's built-in subtests; a client with pytest 8 replays them as plain reports
    from _pytest.subtests import SubtestContext as PytestSubtestContext
    from _pytest.subtests import SubtestReport
except ImportError:  # pragma: no cover - pytest 8
    PytestSubtestContext = None  # type: ignore[assignment,misc]
    SubtestReport = None  # type: ignore[assignment,misc]

#: A failed report's longrepr when the worker sent no text.
NO_FAILURE_TEXT = "(the worker reported this failure without any text)"
# The enums' values, as the literal types TestReport's signature asks for.
_WHEN: dict[TestPhase, Literal["setup", "call", "teardown"]] = {
    TestPhase.SETUP: "setup",
    TestPhase.CALL: "call",
    TestPhase.TEARDOWN: "teardown",
}
_OUTCOME: dict[ReportOutcome, Literal["passed", "failed", "skipped"]] = {
    ReportOutcome.PASSED: "passed",
    ReportOutcome.FAILED: "failed",
    ReportOutcome.SKIPPED: "skipped",
}
#: "path:lineno: message", as pytest's ReprFileLocation and the short style print it.
_FILE_LOCATION = re.compile(r"^(?P<path>\S.*?):(?P<lineno>\d+): ?(?P<message>.*)$")
#: A native (Python) traceback's frame line.
_NATIVE_FRAME = re.compile(r'^\s*File "(?P<path>.+)", line (?P<lineno>\d+)')


class FleetLongrepr(TerminalRepr):
    """A failure's text from a worker, with the crash location recovered from it.

    pytest calls :meth:`toterminal` for the failures section (``str()`` of a
    ``TerminalRepr`` renders it too, which JUnit XML uses for the element
    text) and reads ``reprcrash.message`` for the short summary and JUnit's
    ``message`` attribute, as it does for its own ``ExceptionRepr``.
    """

    def __init__(self, text: str, reprcrash: ReprFileLocation) -> None:
        self.text = text
        self.reprcrash = reprcrash

    def toterminal(self, tw: TerminalWriter) -> None:
        for line in self.text.splitlines():
            # pytest marks the exception lines red and bold; the rest is plain.
            is_error = line == "E" or line.startswith("E ")
            tw.line(line, red=is_error, bold=is_error)

    def __repr__(self) -> str:
        return f"<FleetLongrepr {self.reprcrash.message.partition(chr(10))[0]!r}>"


def reports_from_record(record: TestRecord, *, rootdir: Path | None = None) -> list[TestReport]:
    """The pytest reports of ``record``, in order, as the worker's pytest made
    them (see the module docstring).

    Called by the ``pytest --fleet`` plugin for each record a worker sends;
    ``rootdir`` is the local session's (relative skip paths are joined to it).
    Subtest reports the worker only counted (``omitted_subtests``) come back
    as subtest reports saying so, before the test's own call report, so every
    count, JUnit total and the exit code are those of the serial run.

    (Not named ``pytest_*``: pytest would take such a name imported into a
    plugin module for a hook.)
    """
    location = (record.location.path, record.location.lineno, record.location.domain)
    keywords: dict[str, Literal[1]] = dict.fromkeys(record.keywords, 1)
    phases = list(record.phases)
    omitted = record.omitted_subtests
    if omitted is not None and omitted.total:
        own_call = next(
            (i for i, p in enumerate(phases) if p.when is TestPhase.CALL and p.subtest is None),
            None,
        )
        # Where the subtests ran: before the test's own call report, or after
        # the last report when it has none (an error in the middle of a call).
        at = own_call if own_call is not None else len(phases)
        while at > 0 and phases[at - 1].when is TestPhase.TEARDOWN:
            at -= 1
        phases[at:at] = omitted_reports(omitted)
    return [_report(record.nodeid, location, keywords, phase, record, rootdir) for phase in phases]


def _report(
    nodeid: str,
    location: tuple[str, int | None, str],
    keywords: dict[str, Literal[1]],
    phase: PhaseReport,
    record: TestRecord,
    rootdir: Path | None,
) -> TestReport:
    # Plugins' attributes (the record never names pytest's own fields in them).
    extra: dict[str, Any] = dict(phase.extras)
    # pytest tells xfail-marked reports by hasattr(report, "wasxfail"):
    # the attribute must be absent, not None, on the others.
    if phase.wasxfail is not None:
        extra["wasxfail"] = phase.wasxfail
    args = (
        nodeid,
        location,
        keywords,
        _OUTCOME[phase.outcome],
        _longrepr(phase, record.location, rootdir),
        _WHEN[phase.when],
    )
    fields: dict[str, Any] = {
        "sections": list(phase.sections),
        "duration": phase.duration,
        "start": phase.start,
        "stop": phase.stop,
        "user_properties": list(phase.user_properties),
        **extra,
    }
    if phase.subtest is None or SubtestReport is None or PytestSubtestContext is None:
        return TestReport(*args, **fields)
    report = SubtestReport(*args, **fields)
    context = PytestSubtestContext(msg=phase.subtest.msg, kwargs={})
    # pytest keeps each value as its saferepr text, which the record holds:
    # set as is (the constructor would repr the text once more).
    object.__setattr__(context, "kwargs", dict(phase.subtest.kwargs))
    report.context = context
    return report


def omitted_reports(omitted: OmittedSubtests) -> list[PhaseReport]:
    """Stand-ins for the subtest reports a worker counted but did not keep."""
    context = SubtestContext(msg=report_data.OMITTED_MSG)
    made: list[PhaseReport] = []
    for outcome, count, wasxfail, text in (
        (ReportOutcome.FAILED, omitted.failed, None, "(failure text omitted by testfleet)"),
        (ReportOutcome.PASSED, omitted.passed, None, ""),
        (ReportOutcome.SKIPPED, omitted.skipped, None, ""),
        (ReportOutcome.SKIPPED, omitted.xfailed, "omitted by testfleet", ""),
    ):
        one = PhaseReport(
            when=TestPhase.CALL,
            outcome=outcome,
            longrepr=text,
            wasxfail=wasxfail,
            subtest=context,
        )
        made.extend([one] * count)
    return made


def _longrepr(
    phase: PhaseReport, location: TestLocation, rootdir: Path | None
) -> tuple[str, int, str] | str | FleetLongrepr | None:
    if phase.outcome is ReportOutcome.SKIPPED and phase.wasxfail is None:
        # The skip summary and JUnit XML unpack exactly this tuple.
        skip = phase.skip or SkipLocation(
            path=location.path,
            lineno=None if location.lineno is None else location.lineno + 1,
            reason=phase.longrepr or "Skipped",
        )
        path = skip.path
        if rootdir is not None and not Path(path).is_absolute():
            path = str(rootdir / path)
        # pytest's own tuple can hold a None line (the summary prints the
        # path alone); its annotation says int.
        lineno: Any = skip.lineno
        return (path, lineno, skip.reason)
    if phase.outcome is ReportOutcome.PASSED:
        return None
    if not phase.longrepr:
        # JUnit XML asserts a failure has a longrepr; an xfail does without.
        return NO_FAILURE_TEXT if phase.outcome is ReportOutcome.FAILED else None
    crash = _crash_location(phase.longrepr)
    if crash is None:
        return phase.longrepr
    return FleetLongrepr(phase.longrepr, crash)


def _crash_location(text: str) -> ReprFileLocation | None:
    """The crash line pytest would have quoted, from a rendered failure.

    The last block of ``E`` lines is the final exception (``E`` plus the
    source line's indentation before each line: the prefix of the block's
    first line is cut from all of them; the line style marks only the first
    line and indents the rest). The location is the first
    ``path:lineno:`` line after the block (long and line styles), else the
    last one before it (short style). Without ``E`` lines, a native
    traceback's last line is the exception. None when neither is there.
    """
    lines = text.splitlines()
    end = next((i for i in range(len(lines) - 1, -1, -1) if _is_error_line(lines[i])), None)
    if end is None:
        return _native_crash(lines)
    start = end
    while start > 0 and _is_error_line(lines[start - 1]):
        start -= 1
    first = lines[start]
    width = len(first) - len(first[1:].lstrip()) if first[1:].strip() else len(first)
    # The line style marks only the exception's first line; the rest follow
    # indented as far.
    while end + 1 < len(lines) and lines[end + 1].startswith(" " * width) and width > 1:
        end += 1
    message = "\n".join(
        line[width:] if not line[:width].strip("E ") else line[1:].lstrip()
        for line in lines[start : end + 1]
    )
    after = (_FILE_LOCATION.match(line) for line in lines[end + 1 :])
    before = (_FILE_LOCATION.match(line) for line in reversed(lines[:start]))
    found = next((match for match in after if match), None) or next(
        (match for match in before if match), None
    )
    if found is None:
        return ReprFileLocation("", 0, message)
    return ReprFileLocation(found["path"], int(found["lineno"]), message)


def _native_crash(lines: list[str]) -> ReprFileLocation | None:
    """A native traceback's crash: its last line, at its last frame."""
    content = [line for line in lines if line.strip()]
    if len(content) < 2 or not any(_NATIVE_FRAME.match(line) for line in content):
        return None
    frames = [match for line in content if (match := _NATIVE_FRAME.match(line))]
    return ReprFileLocation(frames[-1]["path"], int(frames[-1]["lineno"]), content[-1])


def _is_error_line(line: str) -> bool:
    return line == "E" or line.startswith("E ")


def phase_report(report: TestReport, *, rootdir: Path | None = None) -> PhaseReport:
    """One pytest report reduced to a :class:`PhaseReport`, within the caps.

    ``rootdir``, the session's, makes a skip's path relative to it, so the
    client can place it under its own rootdir. The reduction is the workers'
    (:func:`testfleet.worker.pytest_sessions.report_data.phase_entry`).
    """
    entry = report_data.phase_entry(report, None if rootdir is None else str(rootdir))
    return PhaseReport.model_validate(entry)


def test_record(
    nodeid: str,
    location: tuple[str, int | None, str],
    keywords: Iterable[str],
    reports: Sequence[TestReport],
    *,
    rootdir: Path | None = None,  # noqa: PT028 (not a test: see __test__ below)
) -> TestRecord:
    """Everything pytest reported for one test, as a :class:`TestRecord`, built as a
    worker's session builds it
    (:class:`~testfleet.worker.pytest_sessions.report_data.RecordBuilder`).

    ``location`` and ``keywords`` are the item's (``item.location``,
    ``item.keywords``). A test reported again from its setup (pytest-rerunfailures
    reruns a test in place) keeps its last try's reports, and reports with
    outcomes pytest does not count (its "rerun") are left out, so the record
    reads as the final attempt.
    """
    builder = report_data.RecordBuilder(
        nodeid, report_data.location_entry(location), report_data.keyword_names(keywords)
    )
    for report in reports:
        if report.when == "setup":
            builder.restart()
        builder.add(report, None if rootdir is None else str(rootdir))
    return TestRecord.model_validate(builder.record())


# pytest would collect test_record as a test from modules that import it.
test_record.__test__ = False  # type: ignore[attr-defined]
