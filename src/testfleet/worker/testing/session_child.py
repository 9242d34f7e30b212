"""A warm pytest session in a child process: the worker side of ``test`` tasks.

Started by :mod:`testfleet.worker.testing.sessions` as::

    <python> -u session_child.py --control-fd N --report-fd M

in a session (process group) of its own. This file is a standalone script: it
imports only the standard library and pytest, because a task may name another
interpreter (``TestConfig.python``) that has pytest but not testfleet. For
the same reason it runs on Python 3.9+ and is started by path without ``-P``
(3.11+ only): the first thing it does is take its own directory off
``sys.path``.

Commands arrive and events leave as JSON lines on two dedicated pipes, never
on stdin/stdout: tests print, and some read stdin. stdout and stderr (pytest's
terminal output, anything a test writes uncaptured, a crash's traceback) go
to a pipe the worker drains into a bounded tail.

Protocol (one JSON object per line):

* Start-up (the *zygote*): import pytest and its built-in plugins, emit
  ``{"event": "ready", ...}`` (or ``{"event": "fatal", "message"}`` and exit
  3 when pytest cannot be imported), then wait for one command. A zygote
  kept ready is what makes a worker warm: a new session pays no interpreter
  start and no pytest import.
* ``{"cmd": "activate", "cwd", "args", "env", "basetemp", "cache_dir",
  "worker"}``: chdir, replace ``os.environ`` with ``env``, and run
  ``pytest.main(args + per-session --basetemp and cache_dir)`` with
  :class:`FleetPlugin`. After collection it emits ``{"event": "collected",
  "count", "errors": [{"nodeid", "longrepr"}], "seconds", "python",
  "pytest_version"}`` and waits for run commands.
* ``{"cmd": "run", "chunk", "node_ids", "env"}``: ``env`` (the attempt's
  ``TESTFLEET_*`` variables) is set, then each node id runs; per test it
  emits ``start`` (nodeid, location, keywords), one ``phase`` per report
  (when, outcome, times: what the worker needs to describe a crash), and
  ``test`` whose ``record`` is a ``TestRecord`` as JSON; then
  ``{"event": "chunk_done", "chunk"}``. In lazy mode (the default; the
  activate command's ``full_collection`` turns it off) the session collects
  nothing at activation, and a chunk first collects the files its node ids
  live in, reporting ``{"event": "collected_more", "count", "errors",
  "seconds"}`` (``count``: tests collected so far).
* ``{"cmd": "exit"}`` or the end of the control pipe (the worker went away)
  ends the session normally; ``{"event": "session_end", "exit_code"}`` is
  the last event, also when pytest stops on its own (a usage error: exit
  code 4, with pytest's message on stderr).
"""

from __future__ import annotations

import os
import sys

# Run by path, Python puts this directory first on sys.path; nothing here may
# shadow the project's own modules.
_HERE = os.path.dirname(os.path.realpath(__file__))
if sys.path and os.path.realpath(sys.path[0] or os.curdir) == _HERE:
    del sys.path[0]

import argparse  # noqa: E402  (the path fix above must come first)
import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    import pytest

PROTOCOL_VERSION = 1
#: Caps, equal to testfleet.domain.testing's (not importable here).
MAX_LONGREPR_CHARS = 16 * 1024
MAX_SECTION_CHARS = 16 * 1024
MAX_SECTIONS = 32
MAX_KEYWORDS = 256
MAX_KEYWORD_CHARS = 256
MAX_USER_PROPERTIES = 256
MAX_WARNINGS = 64
MAX_PATH_CHARS = 4096
#: Exit codes of this script when pytest never ran.
EXIT_NO_PYTEST = 3
EXIT_PARENT_GONE = 70
_KNOWN_OUTCOMES = ("passed", "failed", "skipped")
_CUT_MARKER = "\n... [{} characters cut] ...\n"

Event = dict[str, Any]


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


class Channel:
    """The two pipes to the worker: commands in, events out."""

    def __init__(self, control_fd: int, report_fd: int) -> None:
        # Not inherited by anything a test starts: a lingering grandchild
        # holding the report pipe would hide this process's death from the worker.
        os.set_inheritable(control_fd, False)
        os.set_inheritable(report_fd, False)
        self._control = os.fdopen(control_fd, "rb")
        self._report = report_fd

    def emit(self, event: Event) -> None:
        # ensure_ascii=False then "replace": lone surrogates (undecodable
        # output) become "?" instead of breaking the worker's JSON encoders.
        line = json.dumps(event, ensure_ascii=False, default=str) + "\n"
        data = line.encode("utf-8", errors="replace")
        try:
            while data:
                written = os.write(self._report, data)
                data = data[written:]
        except OSError:
            # The worker is gone; nobody will read a result. End at once.
            os._exit(EXIT_PARENT_GONE)

    def receive(self) -> Event | None:
        """The next command; None when the worker closed the pipe."""
        line = self._control.readline()
        if not line:
            return None
        try:
            command = json.loads(line)
        except ValueError:
            return {"cmd": "invalid", "line": line[:200].decode("utf-8", "replace")}
        return command if isinstance(command, dict) else {"cmd": "invalid"}


def _phase_report(report: pytest.TestReport) -> Event:
    """One TestReport as a ``PhaseReport`` dict (capped)."""
    longrepr = report.longrepr
    skip = None
    if report.skipped and isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, lineno, reason = longrepr
        skip = {
            "path": cap(str(path), MAX_PATH_CHARS),
            "lineno": lineno if isinstance(lineno, int) else None,
            "reason": cap(str(reason), MAX_LONGREPR_CHARS),
        }
    try:
        text = report.longreprtext if longrepr is not None else ""
    except Exception as exc:  # a plugin's longrepr that cannot render itself
        text = f"<unprintable longrepr: {exc!r}>"
    wasxfail = getattr(report, "wasxfail", None)
    sections = [
        (str(title), cap(str(content), MAX_SECTION_CHARS))
        for title, content in list(report.sections)[:MAX_SECTIONS]
    ]
    properties = []
    for entry in list(report.user_properties)[:MAX_USER_PROPERTIES]:
        try:
            name, value = entry
        except (TypeError, ValueError):
            continue
        properties.append((str(name), cap(str(value), MAX_SECTION_CHARS)))
    return {
        "when": report.when,
        "outcome": report.outcome,
        "duration": max(0.0, float(report.duration or 0.0)),
        "start": float(getattr(report, "start", 0.0) or 0.0),
        "stop": float(getattr(report, "stop", 0.0) or 0.0),
        "longrepr": cap(text, MAX_LONGREPR_CHARS),
        "skip": skip,
        "wasxfail": None if wasxfail is None else cap(str(wasxfail), MAX_LONGREPR_CHARS),
        "sections": sections,
        "user_properties": properties,
    }


def _location(item: pytest.Item) -> Event:
    path, lineno, domain = item.location
    return {
        "path": cap(str(path), MAX_PATH_CHARS),
        "lineno": lineno if isinstance(lineno, int) else None,
        "domain": cap(str(domain), MAX_PATH_CHARS),
    }


def _keywords(item: pytest.Item) -> list[str]:
    names: list[str] = []
    seen = set()
    for name in item.keywords:
        short = str(name)[:MAX_KEYWORD_CHARS]
        if short and short not in seen:  # the session node's name is ""
            seen.add(short)
            names.append(short)
        if len(names) >= MAX_KEYWORDS:
            break
    return names


def _failed_setup(nodeid: str, text: str) -> Event:
    """A record for a node id that could not run at all (never collected here)."""
    path, _, domain = nodeid.partition("::")
    now = time.time()
    return {
        "nodeid": nodeid,
        "location": {"path": cap(path, MAX_PATH_CHARS), "lineno": None, "domain": domain},
        "keywords": [],
        "phases": [
            {
                "when": "setup",
                "outcome": "failed",
                "start": now,
                "stop": now,
                "longrepr": cap(text, MAX_LONGREPR_CHARS),
            }
        ],
    }


class FleetPlugin:
    """The pytest plugin of a worker session: it replaces the run-test loop.

    Its hook methods are marked (tryfirst) by :func:`_mark_hooks` once pytest
    is imported, since this module cannot import pytest at the top.
    """

    def __init__(
        self, channel: Channel, worker: str, activated: float, *, lazy: bool = True
    ) -> None:
        self._channel = channel
        self._worker = worker
        self._activated = activated
        self._lazy = lazy
        #: Files (rootdir-relative, as in node ids) collected so far (lazy mode).
        self._collected_files: set[str] = set()
        self._session: pytest.Session | None = None
        self._collect_errors: list[Event] = []
        self._current: str | None = None
        self._reports: list[pytest.TestReport] = []
        self._warnings: list[Event] = []
        self._ran: set[str] = set()

    def pytest_configure(self, config: pytest.Config) -> None:
        option = config.option
        if config.pluginmanager.hasplugin("xdist"):
            # The fleet is the distribution: xdist must not start workers of
            # its own. Its pytest_configure (trylast) reads these after us.
            option.dist = "no"
            option.tx = []
            option.numprocesses = 0
        # A worker sees one chunk, not the run: -x/--maxfail are decided by the
        # client. Left set, a collection error would stop collection early.
        option.maxfail = 0

    def pytest_collection(self, session: pytest.Session) -> bool | None:
        """Lazy mode: collect nothing now; each chunk collects the files it needs.

        Every worker of a run would otherwise collect the whole suite to run
        a fraction of it (on a small machine, collection is most of a short
        chunk's cost); this way the fleet collects each file about once.
        """
        if not self._lazy:
            return None  # pytest's own collection of the run's arguments
        session.items = []
        return True

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._collect_errors.append(
                {"nodeid": report.nodeid, "longrepr": cap(report.longreprtext, MAX_LONGREPR_CHARS)}
            )

    def pytest_warning_recorded(
        self, warning_message: Any, when: str, nodeid: str, location: Any
    ) -> None:
        """Warnings a test raised travel with its record: the client's summary
        counts them as a serial run's would. Collection warnings are left out
        (the client collects too, and reports its own)."""
        if when != "runtest" or self._current is None or nodeid != self._current:
            return
        if len(self._warnings) >= MAX_WARNINGS:
            return
        category = getattr(warning_message, "category", None)
        lineno = getattr(warning_message, "lineno", None)
        self._warnings.append(
            {
                "message": cap(str(getattr(warning_message, "message", "")), MAX_LONGREPR_CHARS),
                "category": getattr(category, "__name__", "Warning")[:MAX_KEYWORD_CHARS],
                "filename": cap(str(getattr(warning_message, "filename", "")), MAX_PATH_CHARS),
                "lineno": lineno if isinstance(lineno, int) else None,
            }
        )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid != self._current:
            return
        if report.when == "setup":
            # A plugin that reruns a test (pytest-rerunfailures) starts again at
            # setup: keep only the last try's reports.
            self._reports = []
        if report.outcome not in _KNOWN_OUTCOMES:
            return  # e.g. "rerun": superseded by the next try
        self._reports.append(report)
        self._channel.emit(
            {
                "event": "phase",
                "nodeid": report.nodeid,
                "when": report.when,
                "outcome": report.outcome,
                "duration": max(0.0, float(report.duration or 0.0)),
                "start": float(getattr(report, "start", 0.0) or 0.0),
                "stop": float(getattr(report, "stop", 0.0) or 0.0),
            }
        )

    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        """Run chunks on command until told to exit; never stop on failures.

        Collection errors, ``shouldfail`` and ``shouldstop`` end pytest's own
        loop; here they are data: the node ids affected get records saying so.
        """
        import pytest

        self._session = session
        index: dict[str, pytest.Item] = {}
        for item in session.items:
            index.setdefault(item.nodeid, item)
        self._channel.emit(
            {
                "event": "collected",
                "count": len(session.items),
                "errors": self._collect_errors,
                "seconds": max(0.0, time.monotonic() - self._activated),
                "python": sys.executable,
                "pytest_version": pytest.__version__,
            }
        )
        while True:
            command = self._channel.receive()
            if command is None or command.get("cmd") == "exit":
                return True
            if command.get("cmd") == "run":
                self._run_chunk(index, command)
            else:
                message = f"unknown command {command!r}"[:500]
                self._channel.emit({"event": "error", "message": message})

    def _run_chunk(self, index: dict[str, pytest.Item], command: Event) -> None:
        chunk = command.get("chunk")
        os.environ.update({str(k): str(v) for k, v in (command.get("env") or {}).items()})
        node_ids = [str(nodeid) for nodeid in command.get("node_ids") or []]
        if self._lazy and self._session is not None:
            self._collect_files_of([n for n in node_ids if n not in index], index)
        items = [index.get(nodeid) for nodeid in node_ids]
        # Each test's next test in this chunk, or None for the last: pytest then
        # tears down every fixture, so nothing of this chunk leaks into the next.
        following: list[pytest.Item | None] = []
        later: pytest.Item | None = None
        for item in reversed(items):
            following.append(later)
            later = item if item is not None else later
        following.reverse()
        # Indexed, not zip(strict=...): this script runs on Python 3.9 too.
        for position, nodeid in enumerate(node_ids):
            item, nextitem = items[position], following[position]
            if item is None:
                record = _failed_setup(nodeid, self._not_collected(nodeid))
                self._channel.emit({"event": "test", "chunk": chunk, "record": record})
                continue
            self._run_item(item, nextitem, chunk)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._channel.emit({"event": "chunk_done", "chunk": chunk})

    def _collect_files_of(self, node_ids: list[str], index: dict[str, pytest.Item]) -> None:
        """Collect the files ``node_ids`` live in (those not collected yet) into ``index``."""

        session = self._session
        assert session is not None
        files = []
        for nodeid in node_ids:
            path = nodeid.split("::", 1)[0]
            if path and path not in self._collected_files:
                self._collected_files.add(path)
                files.append(path)
        if not files:
            return
        started, errors_before = time.monotonic(), len(self._collect_errors)
        # Node ids are relative to the rootdir, collection arguments to the
        # invocation directory: hand pytest absolute paths.
        root = session.config.rootpath
        batches = [[str(root / path) for path in files]]
        for batch in batches:
            try:
                session.perform_collect(batch)
            except Exception as exc:  # pytest.UsageError: a file missing here
                if len(batch) > 1:
                    # Find the file at fault; collect the others.
                    batches.extend([single] for single in batch)
                    continue
                where = os.path.relpath(batch[0], root)
                self._collect_errors.append(
                    {"nodeid": where, "longrepr": cap(str(exc), MAX_LONGREPR_CHARS)}
                )
                continue
            for item in session.items:
                index.setdefault(item.nodeid, item)
        self._channel.emit(
            {
                "event": "collected_more",
                "count": len(index),
                "errors": self._collect_errors[errors_before:],
                "seconds": max(0.0, time.monotonic() - started),
            }
        )

    def _run_item(self, item: pytest.Item, nextitem: pytest.Item | None, chunk: Any) -> None:
        nodeid = item.nodeid
        if nodeid in self._ran:
            # A second run of the same item (a rerun chunk in the same session):
            # what the first run left on the item must not show up again.
            if isinstance(getattr(item, "_report_sections", None), list):
                item._report_sections = []
            item.user_properties = []
            initrequest = getattr(item, "_initrequest", None)
            if initrequest is not None and not getattr(item, "_request", None):
                initrequest()
        self._ran.add(nodeid)
        location, keywords = _location(item), _keywords(item)
        self._current, self._reports, self._warnings = nodeid, [], []
        self._channel.emit(
            {
                "event": "start",
                "chunk": chunk,
                "nodeid": nodeid,
                "location": location,
                "keywords": keywords,
            }
        )
        try:
            item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        finally:
            self._current = None
        try:
            phases = [_phase_report(report) for report in self._reports[-3:]]
        except Exception:  # a report we cannot read must not end the session
            phases = []
            problem = "the worker could not read pytest's report:\n" + traceback.format_exc()
        else:
            problem = "pytest produced no report for this test"
        if not phases:
            phases = _failed_setup(nodeid, problem)["phases"]
        record = {
            "nodeid": nodeid,
            "location": location,
            "keywords": keywords,
            "phases": phases,
            "warnings": self._warnings,
        }
        self._channel.emit({"event": "test", "chunk": chunk, "record": record})

    def _not_collected(self, nodeid: str) -> str:
        text = f"{nodeid} was not collected by the pytest session on worker {self._worker}"
        for error in self._collect_errors:
            where = error["nodeid"]
            if not where or nodeid == where or nodeid.startswith((where + "::", where + "/")):
                return "{}: collecting {} failed there:\n{}".format(
                    text, where or "the session", error["longrepr"]
                )
        return text + " (no test with this node id was collected with the run's arguments)"


def _mark_hooks(pytest_module: Any) -> None:
    for name in (
        "pytest_configure",
        "pytest_collection",
        "pytest_collectreport",
        "pytest_runtest_logreport",
        "pytest_warning_recorded",
        "pytest_runtestloop",
    ):
        pytest_module.hookimpl(tryfirst=True)(getattr(FleetPlugin, name))


def _preload() -> None:
    """Import pytest's built-in plugins, and the installed ones pytest would
    load by entry point, now, while nobody waits for this process."""
    try:
        from _pytest.config import default_plugins
    except ImportError:
        return
    for name in default_plugins:
        try:
            importlib.import_module("_pytest." + name)
        except Exception:  # pytest.main reports it, if it matters
            continue
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return
    try:
        from importlib.metadata import entry_points

        try:
            plugins = list(entry_points(group="pytest11"))
        except TypeError:  # Python 3.9: a mapping of groups
            plugins = list(entry_points().get("pytest11", []))
    except Exception:  # old or broken metadata: pytest will load what it can
        return
    for plugin in plugins:
        # Only the import is done early; pytest registers (or, with -p no:NAME,
        # skips) each one at activation as always.
        try:
            importlib.import_module(plugin.value.split(":", 1)[0])
        except Exception:
            continue


def session_args(args: list[str], basetemp: str, cache_dir: str) -> list[str]:
    """The user's args plus this session's own temporary and cache directories.

    The cache plugin stays on (``-p no:cacheprovider`` would make a ``--lf``
    in the project's addopts a usage error) but writes to a directory of this
    session's. Ours come after the user's options so they win, and before a
    ``--`` after which everything is a path.
    """
    ours = ["--basetemp=" + basetemp]
    if not any(arg in ("no:cacheprovider", "-pno:cacheprovider") for arg in args):
        ours[:0] = ["-o", "cache_dir=" + cache_dir]
    if "--" in args:
        cut = args.index("--")
        return args[:cut] + ours + args[cut:]
    return list(args) + ours


def _activate(channel: Channel, command: Event) -> int:
    import pytest

    activated = time.monotonic()
    try:
        os.chdir(str(command["cwd"]))
        env = {str(k): str(v) for k, v in dict(command.get("env") or {}).items()}
        args = [str(arg) for arg in command.get("args") or []]
        basetemp, cache_dir = str(command["basetemp"]), str(command["cache_dir"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        channel.emit({"event": "fatal", "message": f"cannot activate the session: {exc}"})
        return EXIT_NO_PYTEST
    # Replaced wholesale, so the session sees exactly the attempt's environment
    # (variables read at import time, e.g. by plugins, take effect: nothing of
    # the project is imported yet).
    os.environ.clear()
    os.environ.update(env)
    plugin = FleetPlugin(
        channel,
        str(command.get("worker") or "?"),
        activated,
        lazy=not command.get("full_collection", False),
    )
    try:
        code = int(pytest.main(session_args(args, basetemp, cache_dir), plugins=[plugin]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # pytest itself broke: say so instead of vanishing
        traceback.print_exc()
        code = 3
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    channel.emit({"event": "session_end", "exit_code": code})
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a warm pytest session for a testfleet worker")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    options = parser.parse_args(argv)
    channel = Channel(options.control_fd, options.report_fd)
    try:
        import pytest
    except BaseException as exc:
        channel.emit(
            {
                "event": "fatal",
                "message": f"cannot import pytest with {sys.executable}: {exc!r}",
            }
        )
        return EXIT_NO_PYTEST
    _mark_hooks(pytest)
    _preload()
    channel.emit(
        {
            "event": "ready",
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "python": sys.executable,
            "python_version": "{}.{}.{}".format(*sys.version_info[:3]),
            "pytest_version": pytest.__version__,
        }
    )
    command = channel.receive()
    if command is None or command.get("cmd") == "exit":
        return 0
    if command.get("cmd") != "activate":
        channel.emit({"event": "fatal", "message": f"expected activate, got {command!r}"})
        return EXIT_NO_PYTEST
    return _activate(channel, command)


if __name__ == "__main__":
    sys.exit(main() & 0xFF)
