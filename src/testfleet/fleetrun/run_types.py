"""What a fleet run is handed and hands back: its settings, the collected
tests, progress, outcome, and the coordinator client it needs.

Callers: the ``pytest --fleet`` session (:mod:`testfleet.fleetrun.session`)
builds :class:`RunSettings` and :class:`CollectedTest` values, hands them to
:class:`~testfleet.fleetrun.run.FleetRun` (the run loop) and shows the
:class:`RunProgress` and :class:`RunOutcome` it gets back. Apart from the loop,
so the session and the tests read the run's vocabulary without its internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from testfleet.domain.pytest_tasks import Interruption, ProjectSource, PytestPlugin, TestLocation
from testfleet.domain.resources import TaskResources


class FleetRunError(Exception):
    """The run cannot start or go on; the message says why and what to do."""


class RunClient(Protocol):
    """What a run needs of the coordinator (:class:`testfleet.client.FleetClient`)."""

    def workers(self) -> list[dict[str, Any]]: ...

    def test_durations(self, project: str) -> dict[str, float]: ...

    def submit(self, documents: Sequence[dict[str, Any]]) -> list[str]: ...

    def test_run(self, run_id: str, *, after_seq: int = 0) -> dict[str, Any]: ...

    def cancel_many(self, task_ids: Sequence[str]) -> dict[str, list[str]]: ...


@dataclass(frozen=True)
class CollectedTest:
    """A test the client collected: its node id, location and required hardware."""

    nodeid: str
    location: TestLocation
    hardware: tuple[str, ...] = ()


@dataclass
class RunSettings:
    """How to run: where, what project and pytest args the workers use, and policies."""

    run_id: str
    project: ProjectSource
    #: The pytest arguments for the workers' sessions (see fleetrun.worker_args).
    args: list[str]
    python: str | None = None
    rerun_failures: int = 0
    chunk_timeout_seconds: float = 3600.0
    #: Workers collect the whole suite instead of each chunk's files.
    full_collection: bool = False
    #: The installed plugins the local pytest loaded: the workers' sessions
    #: load these and no others (None: whatever each worker's pytest finds).
    plugins: list[PytestPlugin] | None = None
    #: How often the run is polled; the last poll bounds how late the end is seen.
    poll_interval_seconds: float = 0.05
    #: A chunk no connected worker can run is given up after this long.
    unschedulable_wait_seconds: float = 10.0
    #: How long the run waits for a first worker that takes test tasks (workers
    #: reconnecting after a coordinator restart, or still starting) before failing.
    wait_for_workers_seconds: float = 60.0
    #: What each chunk reserves and is held to on its worker (its pytest
    #: session is started with these limits); None: nothing declared.
    resources: TaskResources | None = None
    progress_interval_seconds: float = 2.0


@dataclass(frozen=True)
class RunProgress:
    """What the run has done so far (handed to the progress callback)."""

    tests_done: int
    tests_total: int
    failures: int
    workers_busy: int
    chunks_queued: int
    chunks_running: int
    rerun: int


@dataclass(frozen=True)
class FlakyTest:
    """A test that failed and then passed when rerun on another worker."""

    nodeid: str
    failed_on: tuple[str, ...]
    passed_on: str
    first_failure: str


@dataclass
class RunOutcome:
    """What the plugin prints after pytest's own summary."""

    run_id: str
    chunks: int = 0
    workers: set[str] = field(default_factory=set)
    flaky: list[FlakyTest] = field(default_factory=list)
    #: Node id -> why it did not run (reported to pytest as an error).
    not_run: dict[str, str] = field(default_factory=dict)
    reruns: int = 0
    split_by: str = "count"
    #: Chunks started before collection from the stored test list (prestart).
    prestarted: int = 0
    #: Prestarted tests this collection did not find (not reported to pytest).
    dropped: int = 0
    #: Collected tests the prestarted chunks did not cover (split after collection).
    new_tests: int = 0
    stopped_early: bool = False
    #: A test stopped its session (``pytest.exit()``): the run stopped there.
    interrupted: Interruption | None = None
