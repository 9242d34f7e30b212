"""A warm pytest session in a child process: the worker side of ``test`` tasks.

Started by :mod:`testfleet.worker.pytest_sessions.sessions` as::

    <python> -u session_child.py --control-fd N --report-fd M

in a session (process group) of its own. This file is a standalone script: it
imports only the standard library and pytest, because a task may name another
interpreter (``TestConfig.python``) that has pytest but not testfleet. For
the same reason it runs on Python 3.9+ and is started by path without ``-P``
(3.11+ only): the first thing it does is take its own directory off
``sys.path``.

Commands arrive and events leave as JSON lines on two dedicated pipes, never
on stdin/stdout (their types are in ``pipe_protocol.py``, the record's caps in
``domain/pytest_limits.py``; both loaded by path like the siblings): tests
print, and some read stdin. stdout and stderr (pytest's terminal output,
anything a test writes uncaptured, a crash's traceback) go to a pipe the
worker drains into a bounded tail.

Protocol (one JSON object per line):

* Start-up (the *zygote*): import pytest and its built-in plugins, emit
  ``{"event": "ready", ...}`` (or ``{"event": "fatal", "message"}`` and exit
  3 when pytest cannot be imported), then wait for one command. A zygote
  kept ready is what makes a worker warm: a new session pays no interpreter
  start and no pytest import. It imports nothing else: installed plugins
  and their packages are imported by pytest itself at activation, after it
  has read the project's configuration, as in a serial run (see
  ``session_setup.preload``).
* ``{"cmd": "activate", "cwd", "args", "env", "basetemp", "cache_dir",
  "worker", "plugins"}``: chdir, replace ``os.environ`` with ``env``, and run
  ``pytest.main(args + per-session --basetemp and cache_dir)`` with
  :class:`FleetPlugin`. ``plugins`` (a list of ``{"name", "distribution",
  "version"}``, or null) are the installed plugins the run's own pytest
  loaded: the others installed here are blocked, and one missing here is a
  usage error (see ``session_setup.py``). After collection it emits
  ``{"event": "collected", "count", "errors": [{"nodeid", "longrepr"}],
  "seconds", "python", "pytest_version"}`` and waits for run commands.
* ``{"cmd": "run", "chunk", "node_ids", "env"}``: ``env`` (the attempt's
  ``TESTFLEET_*`` variables) is set, then each node id runs; per test it
  emits ``start`` (nodeid, location, keywords), one ``phase`` per report of
  the test itself (when, outcome, times: what the worker needs to describe a
  crash; subtest reports send none), and ``test`` whose ``record`` is a
  ``TestRecord`` as JSON (built by ``report_data.py``); then
  ``{"event": "chunk_done", "chunk"}``. A test that stops the session
  (``pytest.exit()``, ``KeyboardInterrupt``) gets a record with its
  ``interrupted`` field set, then ``{"event": "chunk_done", "chunk",
  "interrupted": true}``, and the session ends as pytest ends it. In lazy
  mode (the default; the activate command's ``full_collection`` turns it
  off) the session collects nothing at activation, and a chunk first
  collects the files its node ids live in, reporting ``{"event":
  "collected_more", "count", "errors", "seconds"}`` (``count``: tests
  collected so far).
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
import importlib.util  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    import pytest

    from testfleet.domain import pytest_limits as limits
    from testfleet.worker.pytest_sessions import pipe_protocol as wire
    from testfleet.worker.pytest_sessions import report_data, session_setup
else:

    def _load(name: str, *where: str) -> Any:
        """A module of testfleet's, by its path (``where``: its directory,
        relative to this one): this script runs under interpreters that may
        not have testfleet installed, or another version of it."""
        spec = importlib.util.spec_from_file_location(
            "_testfleet_" + name, os.path.join(_HERE, *where, name + ".py")
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    # The record's caps first: report_data reads them (the model's own, see
    # domain/pytest_limits.py), then the siblings.
    limits = _load("pytest_limits", os.pardir, os.pardir, "domain")
    report_data = _load("report_data")
    session_setup = _load("session_setup")
    wire = _load("pipe_protocol")

#: Exit codes of this script when pytest never ran.
EXIT_NO_PYTEST = 3
EXIT_PARENT_GONE = 70

Entry = dict[str, Any]
cap = report_data.cap
session_args = session_setup.session_args


class Channel:
    """The two pipes to the worker: commands in, events out."""

    def __init__(self, control_fd: int, report_fd: int) -> None:
        # Not inherited by anything a test starts: a lingering grandchild
        # holding the report pipe would hide this process's death from the worker.
        os.set_inheritable(control_fd, False)
        os.set_inheritable(report_fd, False)
        self._control = os.fdopen(control_fd, "rb")
        self._report = report_fd

    def emit(self, event: wire.Event) -> None:
        data = wire.encode(event)
        try:
            while data:
                written = os.write(self._report, data)
                data = data[written:]
        except OSError:
            # The worker is gone; nobody will read a result. End at once.
            os._exit(EXIT_PARENT_GONE)

    def receive(self) -> wire.Command | wire.Invalid | None:
        """The next command; None when the worker closed the pipe."""
        line = self._control.readline()
        if not line:
            return None
        try:
            raw = json.loads(line)
        except ValueError:
            return wire.Invalid(line[:200].decode("utf-8", "replace"))
        return wire.decode_command(raw)


def _failed_setup(nodeid: str, text: str) -> Entry:
    """A record for a node id that could not run at all (never collected here)."""
    path, _, domain = nodeid.partition("::")
    now = time.time()
    return {
        "nodeid": nodeid,
        "location": {
            "path": cap(path, limits.MAX_PATH_CHARS),
            "lineno": None,
            "domain": cap(domain, limits.MAX_NODE_ID_CHARS),
        },
        "keywords": [],
        "phases": [
            {
                "when": "setup",
                "outcome": "failed",
                "start": now,
                "stop": now,
                "longrepr": cap(text, limits.MAX_LONGREPR_CHARS),
            }
        ],
    }


class FleetPlugin:
    """The pytest plugin of a worker session: it replaces the run-test loop.

    Its hook methods are marked (tryfirst, or a wrapper) by :func:`_mark_hooks`
    once pytest is imported, since this module cannot import pytest at the top.
    """

    def __init__(
        self,
        channel: Channel,
        worker: str,
        activated: float,
        *,
        lazy: bool = True,
        wanted_plugins: list[Entry] | None = None,
    ) -> None:
        self._channel = channel
        self._worker = worker
        self._activated = activated
        self._lazy = lazy
        self._wanted_plugins = wanted_plugins
        #: Files (rootdir-relative, as in node ids) collected so far (lazy mode).
        self._collected_files: set[str] = set()
        self._session: pytest.Session | None = None
        self._rootdir: str | None = None
        self._collect_errors: list[Entry] = []
        self._current: str | None = None
        self._builder: Any = None  # report_data.RecordBuilder of the running test
        self._unreadable = ""
        self._ran: set[str] = set()

    def pytest_configure(self, config: pytest.Config) -> None:
        self._rootdir = str(config.rootpath)
        missing = session_setup.missing_plugins(self._wanted_plugins, config.pluginmanager)
        if missing:
            import pytest

            raise pytest.UsageError(
                "the run's pytest loaded {} which this worker's pytest ({}) does not "
                "load: install them here, or leave them out of the run with "
                "-p no:NAME".format(", ".join(missing), sys.executable)
            )
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
                {
                    "nodeid": report.nodeid,
                    "longrepr": cap(report.longreprtext, limits.MAX_LONGREPR_CHARS),
                }
            )

    def pytest_warning_recorded(
        self, warning_message: Any, when: str, nodeid: str, location: Any
    ) -> None:
        """Warnings a test raised travel with its record: the client's summary
        counts them as a serial run's would. Collection warnings are left out
        (the client collects too, and reports its own)."""
        if when != "runtest" or self._builder is None or nodeid != self._current:
            return
        self._builder.add_warning(warning_message)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Any:
        """A wrapper: the report is read after pytest's own hooks have seen it
        (its subtests plugin marks a passing test with failed subtests as
        failed while the terminal reports it), as the client will replay it."""
        yield
        builder = self._builder
        if builder is None or report.nodeid != self._current:
            return
        if report.when == "setup":
            # A plugin that reruns a test (pytest-rerunfailures) starts again at
            # setup: keep only the last try's reports.
            builder.restart()
        try:
            entry = builder.add(report, self._rootdir)
        except Exception:  # a report we cannot read must not end the session
            self._unreadable = traceback.format_exc()
            return
        if entry is None or "subtest" in entry:
            return  # only the test's own reports say where a crash happened
        self._channel.emit(
            wire.Phase(
                nodeid=report.nodeid,
                when=entry["when"],
                outcome=entry["outcome"],
                duration=entry["duration"],
                start=entry["start"],
                stop=entry["stop"],
            )
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
            wire.Collected(
                count=len(session.items),
                errors=self._collect_errors,
                seconds=max(0.0, time.monotonic() - self._activated),
                python=sys.executable,
                pytest_version=pytest.__version__,
            )
        )
        while True:
            command = self._channel.receive()
            if command is None or isinstance(command, wire.Exit):
                return True
            if isinstance(command, wire.RunChunk):
                self._run_chunk(index, command)
            else:
                message = f"unknown command {command!r}"[:500]
                self._channel.emit(wire.Error(message))

    def _run_chunk(self, index: dict[str, pytest.Item], command: wire.RunChunk) -> None:
        chunk = command.chunk
        os.environ.update({str(k): str(v) for k, v in command.env.items()})
        node_ids = [str(nodeid) for nodeid in command.node_ids]
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
                self._channel.emit(wire.TestDone(record=record, chunk=chunk))
                continue
            try:
                self._run_item(item, nextitem, chunk)
            except BaseException as exc:
                if interruption(exc) is None:
                    raise
                # pytest.exit() in a test: the rest of the chunk does not run,
                # and the session ends as pytest ends it (its finish hooks run).
                self._flush()
                self._channel.emit(wire.ChunkDone(chunk=chunk, interrupted=True))
                raise
        self._flush()
        self._channel.emit(wire.ChunkDone(chunk=chunk))

    @staticmethod
    def _flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()

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
                session_setup.requeue_conftests(session)
                session.perform_collect(batch)
            except Exception as exc:  # pytest.UsageError: a file missing here
                if len(batch) > 1:
                    # Find the file at fault; collect the others.
                    batches.extend([single] for single in batch)
                    continue
                where = os.path.relpath(batch[0], root)
                self._collect_errors.append(
                    {"nodeid": where, "longrepr": cap(str(exc), limits.MAX_LONGREPR_CHARS)}
                )
                continue
            for item in session.items:
                index.setdefault(item.nodeid, item)
        self._channel.emit(
            wire.CollectedMore(
                count=len(index),
                errors=self._collect_errors[errors_before:],
                seconds=max(0.0, time.monotonic() - started),
            )
        )

    def _run_item(self, item: pytest.Item, nextitem: pytest.Item | None, chunk: Any) -> None:
        """Run one test and emit its record. A test that stops the session
        (``pytest.exit()``) has its record emitted, then its exception re-raised."""
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
        location = report_data.location_entry(item.location)
        keywords = report_data.keyword_names(item.keywords)
        builder = report_data.RecordBuilder(nodeid, location, keywords)
        self._current, self._builder, self._unreadable = nodeid, builder, ""
        self._channel.emit(
            wire.Start(nodeid=nodeid, chunk=chunk, location=location, keywords=keywords)
        )
        interrupted, stop = None, None
        try:
            item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        except BaseException as exc:
            interrupted = interruption(exc)
            if interrupted is None:
                raise  # pytest's internal error: the session ends, the worker says so
            stop = exc
        finally:
            self._current, self._builder = None, None
        record = builder.record(interrupted)
        if not record["phases"] and interrupted is None:
            problem = "pytest produced no report for this test"
            if self._unreadable:
                problem = "the worker could not read pytest's report:\n" + self._unreadable
            record["phases"] = _failed_setup(nodeid, problem)["phases"]
        self._channel.emit(wire.TestDone(record=record, chunk=chunk))
        if stop is not None:
            raise stop

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
        "pytest_warning_recorded",
        "pytest_runtestloop",
    ):
        pytest_module.hookimpl(tryfirst=True)(getattr(FleetPlugin, name))
    # The old-style wrapper: every pluggy a pytest 8+ comes with has it.
    pytest_module.hookimpl(hookwrapper=True)(FleetPlugin.pytest_runtest_logreport)


def interruption(exc: BaseException) -> Entry | None:
    """The record's ``interrupted`` for an exception that stops a pytest
    session from inside a test (``pytest.exit()``, ``KeyboardInterrupt``);
    None for any other exception."""
    import pytest

    if isinstance(exc, pytest.exit.Exception):
        code = exc.returncode
        return {
            "kind": "exit",
            "message": cap(str(exc.msg), limits.MAX_LONGREPR_CHARS),
            "returncode": int(code) if isinstance(code, int) else None,
        }
    if isinstance(exc, KeyboardInterrupt):
        return {"kind": "keyboard_interrupt", "message": cap(str(exc), limits.MAX_LONGREPR_CHARS)}
    return None


def _activate(channel: Channel, command: wire.Activate) -> int:
    import pytest

    activated = time.monotonic()
    try:
        os.chdir(command.cwd)
    except (OSError, ValueError) as exc:
        channel.emit(wire.Fatal(f"cannot activate the session: {exc}"))
        return EXIT_NO_PYTEST
    env = {str(k): str(v) for k, v in command.env.items()}
    args = [str(arg) for arg in command.args]
    # Replaced wholesale, so the session sees exactly the attempt's environment
    # (variables read at import time, e.g. by plugins, take effect: nothing of
    # the project is imported yet).
    os.environ.clear()
    os.environ.update(env)
    plugins = command.plugins
    wanted = None if plugins is None else [p for p in plugins if isinstance(p, dict)]
    plugin = FleetPlugin(
        channel,
        command.worker or "?",
        activated,
        lazy=not command.full_collection,
        wanted_plugins=wanted,
    )
    blocked: list[Any] = session_setup.blocked_plugins(wanted)
    try:
        code = int(
            pytest.main(
                session_args(args, command.basetemp, command.cache_dir), plugins=[*blocked, plugin]
            )
        )
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # pytest itself broke: say so instead of vanishing
        traceback.print_exc()
        code = 3
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    channel.emit(wire.SessionEnd(exit_code=code))
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
        channel.emit(wire.Fatal(f"cannot import pytest with {sys.executable}: {exc!r}"))
        return EXIT_NO_PYTEST
    _mark_hooks(pytest)
    session_setup.preload()
    channel.emit(
        wire.Ready(
            protocol=wire.PROTOCOL_VERSION,
            pid=os.getpid(),
            python=sys.executable,
            python_version="{}.{}.{}".format(*sys.version_info[:3]),
            pytest_version=pytest.__version__,
        )
    )
    command = channel.receive()
    if command is None or isinstance(command, wire.Exit):
        return 0
    if not isinstance(command, wire.Activate):
        channel.emit(wire.Fatal(f"expected activate, got {command!r}"))
        return EXIT_NO_PYTEST
    return _activate(channel, command)


if __name__ == "__main__":
    sys.exit(main() & 0xFF)
