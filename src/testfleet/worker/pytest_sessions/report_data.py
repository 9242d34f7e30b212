"""pytest's reports for one test, reduced to a record: plain data, within bounds.

One implementation, two callers, so the reduction the unit tests check
against serial pytest is the one the workers run:

* the session child (``session_child.py``) loads this file by its path (it
  runs under interpreters that have pytest but not testfleet) and builds one
  record per test with :class:`RecordBuilder`, which the worker validates as a
  :class:`testfleet.domain.pytest_tasks.TestRecord`;
* :mod:`testfleet.fleetrun.reports` imports it as a module, to build records
  from reports in-process (local use and tests).

So this module imports only the standard library (pytest's reports are read
by duck typing) and runs on Python 3.9+: no ``match``, no runtime ``X | Y``.
Its caps are :mod:`testfleet.domain.pytest_limits`, the module the record
model validates with (loaded by path in a child, imported here otherwise), which
also explains the size policy: every report pytest made is kept, in order, with
its subtest context and the attributes plugins set on it; subtest reports
past ``MAX_SUBTESTS_KEPT`` (of failed ones, and of the others) are only
counted, and past ``SUBTEST_TEXT_BUDGET`` characters of text they are
kept *lean* (the end of their failure, a short description).
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING or __package__:
    from testfleet.domain import pytest_limits as limits
else:
    # Loaded by its path in a session child, which loaded the limits the same
    # way first (see session_child.py): testfleet may not be importable there.
    limits = sys.modules["_testfleet_pytest_limits"]

KNOWN_OUTCOMES = ("passed", "failed", "skipped")
#: Report classes whose ``context`` is a subtest's (pytest 9's built-in
#: subtests, and the pytest-subtests plugin before it).
SUBTEST_REPORT_CLASSES = ("SubtestReport", "SubTestReport")
OMITTED_MSG = "omitted by testfleet: more subtests than one record keeps"
_CUT_MARKER = "\n... [{} characters cut by testfleet] ...\n"
_TAIL_MARKER = "... [{} characters cut by testfleet] ...\n"

Entry = dict[str, Any]


def cap(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: its head and tail around a marker.

    A traceback's end (the assertion and its location) matters most, its
    start says which test; both are kept.
    """
    if len(text) <= limit:
        return text
    head = limit // 4
    # The count's digits are not known before the cut: room for the most.
    tail = limit - head - len(_CUT_MARKER.format(len(text)))
    marker = _CUT_MARKER.format(len(text) - head - tail)
    return text[:head] + marker + text[len(text) - tail :]


def tail(text: str, limit: int) -> str:
    """The end of ``text`` within ``limit`` characters (a lean failure: its crash lines)."""
    if len(text) <= limit:
        return text
    # The count's digits are not known before the cut: room for the most.
    room = limit - len(_TAIL_MARKER.format(len(text)))
    return _TAIL_MARKER.format(len(text) - room) + text[len(text) - room :]


def line_number(value: Any) -> int | None:
    """A line number the record accepts (pytest's are ints or None)."""
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 0 <= value <= limits.MAX_LINE_NUMBER
    ):
        return value
    return None


def location_entry(location: tuple[Any, Any, Any]) -> Entry:
    """``item.location`` as the record's ``location``."""
    path, lineno, domain = location
    return {
        "path": cap(str(path), limits.MAX_PATH_CHARS),
        "lineno": line_number(lineno),
        "domain": cap(str(domain), limits.MAX_NODE_ID_CHARS),
    }


def keyword_names(keywords: Any) -> list[str]:
    """``item.keywords``' names, unique and within the caps.

    Names longer than the cap are dropped rather than cut: a cut name would
    select differently with ``-k``. The session node's name ("") is left out.
    """
    names: list[str] = []
    seen = set()
    for name in keywords:
        name = str(name)
        if name and len(name) <= limits.MAX_KEYWORD_CHARS and name not in seen:
            seen.add(name)
            names.append(name)
            if len(names) >= limits.MAX_KEYWORDS:
                break
    return names


def _relative(path: str, rootdir: str | None) -> str:
    if rootdir is None or not os.path.isabs(path):
        return path
    relative = os.path.relpath(path, rootdir)
    return path if relative.startswith(os.pardir) else relative


def _float(value: Any) -> float:
    try:
        number = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number and abs(number) != float("inf") else 0.0


def is_subtest(report: Any) -> bool:
    context = getattr(report, "context", None)
    return type(report).__name__ in SUBTEST_REPORT_CLASSES and hasattr(context, "kwargs")


def _subtest_context(report: Any) -> Entry:
    context = report.context
    msg = getattr(context, "msg", None)
    kwargs: dict[str, str] = {}
    for key, value in list(dict(getattr(context, "kwargs", {}) or {}).items()):
        if len(kwargs) >= limits.MAX_SUBTEST_KWARGS:
            break
        # pytest 9 keeps each value as its saferepr text already.
        text = value if isinstance(value, str) else _safe_repr(value)
        kwargs[cap(str(key), limits.MAX_SUBTEST_KEY_CHARS)] = cap(
            text, limits.MAX_SUBTEST_VALUE_CHARS
        )
    return {
        "msg": None if msg is None else cap(str(msg), limits.MAX_LONGREPR_CHARS),
        "kwargs": kwargs,
    }


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a value whose repr raises
        return f"<unprintable {type(value).__name__}: {exc!r}>"


def _extras(report: Any) -> Entry:
    """Attributes a plugin set on the report, those that are JSON values within the caps."""
    extras: Entry = {}
    for name, value in list(vars(report).items()):
        if len(extras) >= limits.MAX_REPORT_EXTRAS:
            break
        if not isinstance(name, str) or name in limits.STANDARD_ATTRIBUTES:
            continue
        if len(name) > limits.MAX_REPORT_EXTRA_NAME_CHARS:
            continue
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue  # not plain data (an object of the plugin's): it stays behind
        if len(text) <= limits.MAX_REPORT_EXTRA_CHARS:
            extras[name] = json.loads(text)
    return extras


def phase_entry(report: Any, rootdir: str | None = None) -> Entry:
    """One pytest report as a ``PhaseReport`` dict, capped.

    ``rootdir`` (the session's) makes a skip's path relative to it, so the
    client can place it under its own rootdir. Fields at their defaults are
    left out (the worker's pipe and the record stay small).
    """
    longrepr = report.longrepr
    wasxfail = getattr(report, "wasxfail", None)
    entry: Entry = {
        "when": report.when,
        "outcome": report.outcome,
        "duration": max(0.0, _float(report.duration)),
        "start": _float(getattr(report, "start", 0.0)),
        "stop": _float(getattr(report, "stop", 0.0)),
    }
    if report.outcome == "skipped" and wasxfail is None and isinstance(longrepr, tuple):
        path, lineno, reason = (*longrepr, None, None, "")[:3]
        entry["skip"] = {
            "path": cap(_relative(str(path), rootdir), limits.MAX_PATH_CHARS),
            "lineno": line_number(lineno),
            "reason": cap(str(reason), limits.MAX_LONGREPR_CHARS),
        }
    elif longrepr is not None:
        try:
            text = report.longreprtext
        except Exception as exc:  # a plugin's longrepr that cannot render itself
            text = f"<unprintable longrepr: {exc!r}>"
        entry["longrepr"] = cap(text, limits.MAX_LONGREPR_CHARS)
    if wasxfail is not None:
        entry["wasxfail"] = cap(str(wasxfail), limits.MAX_LONGREPR_CHARS)
    # The latest sections are this report's own: keep those when cutting.
    sections = [
        [str(title), cap(str(content), limits.MAX_SECTION_CHARS)]
        for title, content in list(report.sections)[-limits.MAX_SECTIONS :]
    ]
    if sections:
        entry["sections"] = sections
    properties = []
    for item in list(report.user_properties)[: limits.MAX_USER_PROPERTIES]:
        try:
            name, value = item
        except (TypeError, ValueError):
            continue
        properties.append([str(name), cap(str(value), limits.MAX_SECTION_CHARS)])
    if properties:
        entry["user_properties"] = properties
    if is_subtest(report):
        entry["subtest"] = _subtest_context(report)
    extras = _extras(report)
    if extras:
        entry["extras"] = extras
    return entry


def text_chars(entry: Entry) -> int:
    """Characters of text in an entry (what the subtest budget counts)."""
    chars = len(entry.get("longrepr", "")) + len(entry.get("wasxfail") or "")
    chars += sum(len(content) for _, content in entry.get("sections", ()))
    chars += sum(len(value) for _, value in entry.get("user_properties", ()))
    chars += len((entry.get("skip") or {}).get("reason", ""))
    subtest = entry.get("subtest")
    if subtest is not None:
        chars += len(subtest["msg"] or "")
        chars += sum(len(k) + len(v) for k, v in subtest["kwargs"].items())
    if "extras" in entry:
        chars += len(json.dumps(entry["extras"]))
    return chars


def lean(entry: Entry) -> Entry:
    """A subtest entry past the text budget: outcome, times, the end of its
    failure (its crash line, which the short summary and JUnit quote) and a
    short description; no captured output, properties or extras. (The
    worker's executor also slims any report of a chunk's result this way
    when the result would be too big: see ``executors/pytest_run.py``.)"""
    slim = {key: entry[key] for key in ("when", "outcome", "duration", "start", "stop")}
    if entry.get("longrepr"):
        slim["longrepr"] = tail(entry["longrepr"], limits.LEAN_LONGREPR_CHARS)
    if entry.get("wasxfail") is not None:
        slim["wasxfail"] = cap(entry["wasxfail"], limits.LEAN_LONGREPR_CHARS)
    if entry.get("skip"):
        slim["skip"] = dict(
            entry["skip"], reason=cap(entry["skip"]["reason"], limits.LEAN_LONGREPR_CHARS)
        )
    subtest = entry.get("subtest")
    if subtest is not None:
        msg = subtest["msg"]
        kwargs = list(subtest["kwargs"].items())[: limits.LEAN_SUBTEST_KWARGS]
        slim["subtest"] = {
            "msg": None if msg is None else cap(msg, limits.LEAN_SUBTEST_MSG_CHARS),
            "kwargs": {
                cap(k, limits.LEAN_SUBTEST_KEY_CHARS): cap(v, limits.LEAN_SUBTEST_VALUE_CHARS)
                for k, v in kwargs
            },
        }
    return slim


def _omitted_kind(entry: Entry) -> str:
    if entry["outcome"] == "skipped" and entry.get("wasxfail") is not None:
        return "xfailed"
    return str(entry["outcome"])


class RecordBuilder:
    """One test's record, built report by report as pytest makes them.

    The session child makes one per test it runs: :meth:`add` for each
    report (after pytest's own hooks have seen it: pytest marks a test with
    failed subtests as failed while reporting it), :meth:`warning` for each
    warning, :meth:`restart` when a plugin runs the test again in place
    (pytest-rerunfailures: only the last try is kept), then :meth:`record`.
    """

    def __init__(self, nodeid: str, location: Entry, keywords: list[str]) -> None:
        self.nodeid = nodeid
        self.location = location
        self.keywords = keywords
        self.restart()
        self._warnings: dict[tuple[str, str, str, int | None], Entry] = {}
        self._warnings_omitted = 0

    def restart(self) -> None:
        self.phases: list[Entry] = []
        self._own = 0
        self._kept = {"failed": 0, "other": 0}
        self._omitted = {"passed": 0, "failed": 0, "skipped": 0, "xfailed": 0}
        self._subtest_text = 0

    def add(self, report: Any, rootdir: str | None = None) -> Entry | None:
        """Reduce and keep one report; returns its entry (None: only counted)."""
        if report.outcome not in KNOWN_OUTCOMES:
            return None  # e.g. pytest-rerunfailures' "rerun": superseded by the next try
        entry = phase_entry(report, rootdir)
        if "subtest" not in entry:
            if self._own >= limits.MAX_REPORTS_PER_TEST - 2 * limits.MAX_SUBTESTS_KEPT:
                return None  # a plugin reporting its test thousands of times
            self._own += 1
            self.phases.append(entry)
            return entry
        kind = "failed" if entry["outcome"] == "failed" else "other"
        if self._kept[kind] >= limits.MAX_SUBTESTS_KEPT:
            self._omitted[_omitted_kind(entry)] += 1
            return None
        self._kept[kind] += 1
        if self._subtest_text + text_chars(entry) > limits.SUBTEST_TEXT_BUDGET:
            entry = lean(entry)
        self._subtest_text += text_chars(entry)
        self.phases.append(entry)
        return entry

    def add_warning(self, warning_message: Any) -> None:
        """A ``warnings.WarningMessage`` pytest recorded for the test
        (``pytest_warning_recorded`` with ``when="runtest"``)."""
        category = getattr(warning_message, "category", None)
        self.warning(
            str(getattr(warning_message, "message", "")),
            str(getattr(category, "__name__", "Warning")),
            str(getattr(warning_message, "filename", "")),
            getattr(warning_message, "lineno", None),
        )

    def warning(self, message: str, category: str, filename: str, lineno: Any) -> None:
        """A warning the test raised; the same one again only counts up."""
        key = (
            cap(message, limits.MAX_LONGREPR_CHARS),
            category[: limits.MAX_WARNING_CATEGORY_CHARS],
            cap(filename, limits.MAX_PATH_CHARS),
            line_number(lineno),
        )
        known = self._warnings.get(key)
        if known is not None:
            known["count"] += 1
        elif len(self._warnings) >= limits.MAX_WARNINGS:
            self._warnings_omitted += 1
        else:
            self._warnings[key] = {
                "message": key[0],
                "category": key[1],
                "filename": key[2],
                "lineno": key[3],
                "count": 1,
            }

    def record(self, interrupted: Entry | None = None) -> Entry:
        """The ``TestRecord`` dict (fields at their defaults left out)."""
        record: Entry = {
            "nodeid": self.nodeid,
            "location": self.location,
            "keywords": self.keywords,
            "phases": self.phases,
        }
        if any(self._omitted.values()):
            record["omitted_subtests"] = dict(self._omitted)
        if self._warnings:
            record["warnings"] = list(self._warnings.values())
        if self._warnings_omitted:
            record["warnings_omitted"] = self._warnings_omitted
        if interrupted is not None:
            record["interrupted"] = interrupted
        return record
