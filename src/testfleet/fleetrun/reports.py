"""pytest's ``TestReport`` to and from :class:`~testfleet.domain.testing.TestRecord`.

Two directions, two callers:

* On a worker (and in local use), :func:`phase_report` and
  :func:`test_record` reduce the reports pytest made for one test to a
  record: plain data, capped so a chunk of many failing tests still fits in
  a frame.
* On the machine that started the run, the ``pytest --fleet`` plugin turns
  each record that comes back into real reports with :func:`reports_from_record`
  and feeds them to ``config.hook.pytest_runtest_logreport``. pytest's own
  terminal summary, ``-r`` short summary, JUnit XML and exit code then see
  the same reports a serial run would have made, so their counts agree
  ("2 failed, 3 passed, 1 skipped, 1 xfailed, 1 xpassed, 2 errors").

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

from testfleet.domain.testing import (
    MAX_LONGREPR_CHARS,
    MAX_SECTION_CHARS,
    PhaseReport,
    ReportOutcome,
    SkipLocation,
    TestLocation,
    TestPhase,
    TestRecord,
)

#: The record's list caps (see :class:`PhaseReport` and :class:`TestRecord`).
MAX_SECTIONS = 32
MAX_USER_PROPERTIES = 256
MAX_KEYWORDS = 256
MAX_KEYWORD_CHARS = 256
MAX_PATH_CHARS = 4096

_PHASE_ORDER = {TestPhase.SETUP: 0, TestPhase.CALL: 1, TestPhase.TEARDOWN: 2}
_KNOWN_OUTCOMES = frozenset(outcome.value for outcome in ReportOutcome)
#: A failed phase's longrepr when the worker sent no text.
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
    """One pytest ``TestReport`` per phase of ``record``, as the worker's
    pytest made them (see the module docstring).

    Called by the ``pytest --fleet`` plugin for each record a worker sends;
    ``rootdir`` is the local session's (relative skip paths are joined to it).

    (Not named ``pytest_*``: pytest would take such a name imported into a
    plugin module for a hook.)
    """
    location = (record.location.path, record.location.lineno, record.location.domain)
    keywords: dict[str, Literal[1]] = dict.fromkeys(record.keywords, 1)
    reports: list[TestReport] = []
    for phase in record.phases:
        extra: dict[str, Any] = {}
        # pytest tells xfail-marked reports by hasattr(report, "wasxfail"):
        # the attribute must be absent, not None, on the others.
        if phase.wasxfail is not None:
            extra["wasxfail"] = phase.wasxfail
        reports.append(
            TestReport(
                record.nodeid,
                location,
                keywords,
                _OUTCOME[phase.outcome],
                _longrepr(phase, record.location, rootdir),
                _WHEN[phase.when],
                sections=list(phase.sections),
                duration=phase.duration,
                start=phase.start,
                stop=phase.stop,
                user_properties=list(phase.user_properties),
                **extra,
            )
        )
    return reports


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

    Called by the worker's test executor for each report of a test (and by
    :func:`test_record`). ``rootdir``, the session's, makes a skip's path
    relative to it, so the client can place it under its own rootdir.
    """
    wasxfail = getattr(report, "wasxfail", None)
    skip = None
    longrepr = ""
    raw = report.longrepr
    if report.outcome == "skipped" and wasxfail is None and isinstance(raw, tuple):
        path, lineno, reason = raw
        skip = SkipLocation(
            path=_cap(_relative(str(path), rootdir), MAX_PATH_CHARS),
            lineno=lineno,
            reason=_cap(str(reason), MAX_LONGREPR_CHARS),
        )
    elif raw is not None:
        longrepr = _cap(report.longreprtext, MAX_LONGREPR_CHARS)
    sections = [
        (str(title), _cap(str(content), MAX_SECTION_CHARS)) for title, content in report.sections
    ]
    return PhaseReport(
        when=TestPhase(report.when),
        outcome=ReportOutcome(report.outcome),
        duration=max(0.0, float(report.duration)),
        start=float(getattr(report, "start", 0.0)),
        stop=float(getattr(report, "stop", 0.0)),
        longrepr=longrepr,
        skip=skip,
        wasxfail=None if wasxfail is None else _cap(str(wasxfail), MAX_LONGREPR_CHARS),
        # The latest sections are this phase's own: keep those when cutting.
        sections=sections[-MAX_SECTIONS:],
        user_properties=[
            (str(name), _cap(str(value), MAX_SECTION_CHARS))
            for name, value in report.user_properties[:MAX_USER_PROPERTIES]
        ],
    )


def test_record(
    nodeid: str,
    location: tuple[str, int | None, str],
    keywords: Iterable[str],
    reports: Sequence[TestReport],
    *,
    rootdir: Path | None = None,  # noqa: PT028 (not a test: see __test__ below)
    crashed: bool = False,  # noqa: PT028
) -> TestRecord:
    """Everything pytest reported for one test, as a :class:`TestRecord`.

    Called by the worker's test executor when a test's teardown report is in
    (or its process died: ``crashed``). ``location`` and ``keywords`` are the
    item's (``item.location``, ``item.keywords``). A phase reported more than
    once (pytest-rerunfailures reruns a test in place) keeps its last report,
    and reports with outcomes pytest does not count (its "rerun") are left
    out, so the record reads as the final attempt.
    """
    last: dict[TestPhase, TestReport] = {}
    for report in reports:
        if report.outcome in _KNOWN_OUTCOMES:
            last[TestPhase(report.when)] = report
    phases = [phase_report(last[when], rootdir=rootdir) for when in sorted(last, key=_order)]
    # Names longer than the cap are dropped rather than cut: a cut name
    # would select differently with -k.
    names = list(dict.fromkeys(name for name in keywords if len(name) <= MAX_KEYWORD_CHARS))
    names = names[:MAX_KEYWORDS]
    path, lineno, domain = location
    return TestRecord(
        nodeid=nodeid,
        location=TestLocation(
            path=_cap(str(path), MAX_PATH_CHARS), lineno=lineno, domain=_cap(domain, 4096)
        ),
        keywords=names,
        phases=phases,
        crashed=crashed,
    )


# pytest would collect test_record as a test from modules that import it.
test_record.__test__ = False  # type: ignore[attr-defined]


def _order(phase: TestPhase) -> int:
    return _PHASE_ORDER[phase]


def _relative(path: str, rootdir: Path | None) -> str:
    if rootdir is None:
        return path
    try:
        return str(Path(path).relative_to(rootdir))
    except ValueError:
        return path


def _cap(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: its start and, mostly, its end
    (a traceback's last lines name the error), with a note of what was cut."""
    if len(text) <= limit:
        return text
    note = "\n... [{} characters cut by testfleet] ...\n"
    room = limit - len(note.format(len(text)))
    head = room // 4
    tail = room - head
    return text[:head] + note.format(len(text) - room) + text[len(text) - tail :]
