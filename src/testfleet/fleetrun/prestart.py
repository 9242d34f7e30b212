"""Starting a run's first chunks before local collection ends, from the test
list the same command collected last time, and reconciling them with what
this collection finds.

Callers: :class:`~testfleet.fleetrun.session.FleetSession` calls
:func:`stored_suite` and :func:`prestart` at session start (before pytest
collects) and :func:`save_suite` once collection is done;
:class:`~testfleet.fleetrun.run.FleetRun` calls :func:`reconcile` with the
collected tests. The suite benchmark's timeline measured the client's start-up
and collection as about a second before the first chunk; this starts the
chunks (and with them the workers' sessions) during that second.

The stored list is the node ids (and required hardware) the same command
collected last time: same project, same pytest arguments as given (so the
same paths, ``-k``, ``-m`` and ``--deselect``, which the workers never see;
only ``--fleet-run-id`` is left out of the comparison), same interpreter.
It lives in the user's cache directory (``$XDG_CACHE_HOME/testfleet/suites``,
or ``~/.cache/...``), one small JSON file per command, written after each
collection. A missing or unreadable file
means no prestart, never an error.

Reconciling keeps the run's counts equal to a serial run's:

* a prestarted test this collection still finds, with the same hardware, is
  expected from its prestarted chunk;
* a prestarted test that is no longer collected (removed, renamed, its
  parameters changed) is dropped: whatever its chunk reports for it (a worker
  reports a node id it cannot find as an error) is not reported to pytest,
  and the run's summary says how many were dropped; one whose hardware marker
  changed is dropped from its chunk the same way and runs in a new one;
* a collected test that was not prestarted is new: it goes into the chunks
  split after collection, submitted behind the prestarted ones.

No prestart when the selection may differ between two runs of the same
command: ``--lf``/``--sw`` (they select from pytest's cache), or
``--collect-only`` (nothing may run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testfleet.client import FleetError
from testfleet.fleetrun.chunk_tasks import chunk_document
from testfleet.fleetrun.run_types import CollectedTest, RunClient, RunSettings
from testfleet.fleetrun.split import Chunk, SuiteTest, split_suite
from testfleet.fleetrun.warm_up import workers_taking_tests

#: Options whose selection depends on pytest's cache, not on the arguments.
CACHE_SELECTED = ("--lf", "--last-failed", "--sw", "--stepwise", "--sw-skip", "--stepwise-skip")
#: The stored lists' format; another version is ignored (and overwritten).
FORMAT_VERSION = 1
#: Left out of the command's key (see :func:`suite_cache_path`).
RUN_ID_OPTION = "--fleet-run-id"
#: Where the lists live, if set (tests point it at a temporary directory).
SUITE_CACHE_ENV = "TESTFLEET_SUITE_CACHE"


@dataclass(frozen=True)
class Prestarted:
    """Chunks submitted before collection: each task id with its chunk, and
    what the split knew (slots, duration history, eligible workers)."""

    chunks: list[tuple[str, Chunk]]
    slots: int
    history: dict[str, float]
    workers: list[str]


@dataclass
class Reconciled:
    """What the prestarted chunks mean once the suite is collected."""

    #: Prestarted task id -> the collected tests expected from it, in chunk order.
    expected: dict[str, list[str]] = field(default_factory=dict)
    #: Collected tests no prestarted chunk covers, in collection order.
    new: list[CollectedTest] = field(default_factory=list)
    #: Prestarted node ids this collection did not find (or found changed).
    dropped: list[str] = field(default_factory=list)
    #: Prestarted tasks left with no expected test (to cancel).
    empty: list[str] = field(default_factory=list)


def prestart_allowed(args: Sequence[str], *, collect_only: bool) -> bool:
    """Whether the stored list can stand for this run's selection, given the
    pytest arguments as invoked (see the module docstring)."""
    if collect_only:
        return False
    return not any(arg.split("=", 1)[0] in CACHE_SELECTED for arg in args)


def suite_cache_path(settings: RunSettings, invocation: Sequence[str]) -> Path:
    """The file holding the last collected list of this run's command
    (``invocation``: its pytest arguments as given)."""
    root = os.environ.get(SUITE_CACHE_ENV)
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "testfleet" / "suites"
    key = json.dumps(
        [settings.project.key(), _without_run_id(invocation), settings.python, settings.args]
    )
    return base / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def _without_run_id(args: Sequence[str]) -> list[str]:
    """``args`` less ``--fleet-run-id`` and its value: a new id each run is
    still the same command."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == RUN_ID_OPTION:
            skip = True
        elif not arg.startswith(RUN_ID_OPTION + "="):
            kept.append(arg)
    return kept


def stored_suite(path: Path) -> list[SuiteTest] | None:
    """The stored list at ``path`` (estimates left empty), or None if there is
    none or it cannot be read: a prestart only saves time, it never fails a run."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != FORMAT_VERSION:
            return None
        tests = [
            SuiteTest(str(nodeid), None, tuple(str(h) for h in hardware))
            for nodeid, hardware in data["tests"]
        ]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return tests or None


def save_suite(path: Path, tests: Sequence[CollectedTest]) -> None:
    """Store this collection's list for the next run of the same command
    (atomically: a concurrent run reads the old list or the new one)."""
    body = json.dumps(
        {"version": FORMAT_VERSION, "tests": [[t.nodeid, list(t.hardware)] for t in tests]}
    )
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(body)
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def prestart(
    client: RunClient, settings: RunSettings, stored: Sequence[SuiteTest]
) -> Prestarted | None:
    """Split ``stored`` by the project's duration history over the connected
    test slots and submit the chunks now, as ``<run_id>.r0.p<index>``.

    None (nothing submitted) when no worker takes tests yet or the coordinator
    refuses: the run then splits after collection as before. A refusal after
    a submission that may have been committed cancels what it may have made.
    """
    try:
        workers = workers_taking_tests(client.workers())
        if not workers:
            return None
        history = client.test_durations(settings.project.key())
    except FleetError:
        return None
    slots = sum(int(w.get("slots", 1)) for w in workers)
    suite = [SuiteTest(t.nodeid, history.get(t.nodeid), t.hardware) for t in stored]
    chunks = [
        (f"{settings.run_id}.r0.p{index:05d}", chunk)
        for index, chunk in enumerate(split_suite(suite, workers=slots))
    ]
    documents = [
        chunk_document(task_id, chunk, settings, exclude=(), rerun=0) for task_id, chunk in chunks
    ]
    try:
        client.submit(documents)
    except FleetError:
        with contextlib.suppress(FleetError):
            client.cancel_many([task_id for task_id, _ in chunks])
        return None
    return Prestarted(
        chunks=chunks,
        slots=slots,
        history=history,
        workers=sorted(str(w["worker_id"]) for w in workers),
    )


def reconcile(prestarted: Prestarted, collected: Sequence[CollectedTest]) -> Reconciled:
    """Match the prestarted chunks with the collected suite (see the module docstring)."""
    hardware = {t.nodeid: tuple(sorted(set(t.hardware))) for t in collected}
    result = Reconciled()
    covered: set[str] = set()
    for task_id, chunk in prestarted.chunks:
        expected = []
        for nodeid in chunk.node_ids:
            if hardware.get(nodeid) == chunk.hardware and nodeid not in covered:
                expected.append(nodeid)
                covered.add(nodeid)
            else:
                result.dropped.append(nodeid)
        result.expected[task_id] = expected
        if not expected:
            result.empty.append(task_id)
    result.new = [t for t in collected if t.nodeid not in covered]
    return result


__all__ = [
    "Prestarted",
    "Reconciled",
    "prestart",
    "prestart_allowed",
    "reconcile",
    "save_suite",
    "stored_suite",
    "suite_cache_path",
]
