"""Test tasks (``type: test``): what a chunk of a pytest run asks for, and what
one test's outcome looks like on the wire and in DuckDB.

Callers:

* ``testfleet run`` / ``pytest --fleet`` (``testfleet.fleetrun``) build
  :class:`TestConfig` documents, one per chunk of node ids, and turn the
  :class:`TestRecord` objects that come back into pytest reports locally, so
  pytest's own terminal summary, JUnit XML and exit code see the same reports a
  serial run would have produced.
* The worker's ``test`` executor (``testfleet.worker.executors.pytest_run``)
  runs the node ids in a warm pytest session and produces one
  :class:`TestRecord` per test, streamed while the chunk runs and listed again
  in the attempt's result (:class:`TestChunkOutcome`).
* The coordinator validates records at the edge (the ``tests`` message and the
  result), stores one row per (attempt, test) and tells a retried attempt
  which tests earlier attempts already reported, so none is counted twice.

A record keeps each phase's raw report (setup, call, teardown) rather than a
single verdict: pytest counts categories per report (a test that passes and
then errors in teardown is "1 passed, 1 error"), and the client can only
reproduce serial pytest's counts from the reports themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from testfleet.domain.fields import EnvName

#: Per-phase caps keep a chunk of many failing tests inside one frame.
MAX_LONGREPR_CHARS = 16 * 1024
MAX_SECTION_CHARS = 16 * 1024
MAX_NODE_ID_CHARS = 4096
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
#: A git commit as a hex object name (abbreviated or full); branch names are
#: refused because they move and a run must be reproducible.
COMMIT_PATTERN = r"^[0-9a-fA-F]{7,40}$"

NodeId = Annotated[str, Field(min_length=1, max_length=MAX_NODE_ID_CHARS)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TestPhase(StrEnum):
    """The phase of one pytest test a report belongs to."""

    __test__ = False  # not a pytest test class, despite the name

    SETUP = "setup"
    CALL = "call"
    TEARDOWN = "teardown"


class ReportOutcome(StrEnum):
    """pytest's ``TestReport.outcome`` for one phase."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class TestOutcome(StrEnum):
    """One test's verdict, as stored and queried (derived from its phases)."""

    __test__ = False

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    XPASSED = "xpassed"

    @property
    def is_failure(self) -> bool:
        """Failed or errored: what ``--rerun-failures`` reruns and what fails a run."""
        return self in (TestOutcome.FAILED, TestOutcome.ERROR)


class SkipLocation(_Model):
    """Where a skip was raised, as pytest keeps it for the short summary."""

    path: str = Field(max_length=4096)
    lineno: int | None = None
    reason: str = Field(default="", max_length=MAX_LONGREPR_CHARS)


class PhaseReport(_Model):
    """One pytest ``TestReport`` (setup, call or teardown), reduced to plain data."""

    when: TestPhase
    outcome: ReportOutcome
    duration: float = Field(default=0.0, ge=0)
    start: float = 0.0
    stop: float = 0.0
    #: The failure text as pytest renders it (``report.longreprtext``), capped.
    longrepr: str = Field(default="", max_length=MAX_LONGREPR_CHARS)
    #: For a skip: where and why, so the short summary reads as pytest's.
    skip: SkipLocation | None = None
    #: Set when the test was xfail-marked (pytest's ``report.wasxfail``).
    wasxfail: str | None = Field(default=None, max_length=MAX_LONGREPR_CHARS)
    #: Captured output sections, e.g. ("Captured stdout call", "..."), capped.
    sections: list[tuple[str, Annotated[str, Field(max_length=MAX_SECTION_CHARS)]]] = Field(
        default_factory=list, max_length=32
    )
    user_properties: list[tuple[str, str]] = Field(default_factory=list, max_length=256)


class TestLocation(_Model):
    """pytest's ``item.location``: file relative to rootdir, 0-based line, test name."""

    __test__ = False

    path: str = Field(max_length=4096)
    lineno: int | None = None
    domain: str = Field(default="", max_length=MAX_NODE_ID_CHARS)


class TestWarning(_Model):
    """A warning a test raised while it ran (pytest's ``pytest_warning_recorded``)."""

    __test__ = False

    message: str = Field(max_length=MAX_LONGREPR_CHARS)
    #: The warning class's name, e.g. "DeprecationWarning".
    category: str = Field(max_length=256)
    filename: str = Field(default="", max_length=4096)
    lineno: int | None = None


class TestRecord(_Model):
    """Everything pytest reported for one test on one worker.

    ``phases`` is in order; a test normally has setup, call and teardown (a
    failed or skipped setup has no call). ``crashed`` marks a test whose pytest
    process died under it: its phases end with a synthesized failed report
    whose ``longrepr`` says so.
    """

    __test__ = False

    nodeid: NodeId
    location: TestLocation
    keywords: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=256
    )
    phases: list[PhaseReport] = Field(min_length=1, max_length=3)
    crashed: bool = False
    warnings: list[TestWarning] = Field(default_factory=list, max_length=64)

    @property
    def outcome(self) -> TestOutcome:
        return derive_outcome(self.phases)

    @property
    def duration_seconds(self) -> float:
        return sum(phase.duration for phase in self.phases)

    @property
    def failure_text(self) -> str:
        """The first failing phase's text ("" when nothing failed)."""
        for phase in self.phases:
            if phase.outcome is ReportOutcome.FAILED:
                return phase.longrepr
        return ""


def derive_outcome(phases: list[PhaseReport]) -> TestOutcome:
    """One verdict from a test's phase reports, by pytest's rules.

    A failed setup or teardown is an error (even after a passing call); a
    failed call is a failure; an xfail-marked call that failed is xfailed and
    one that passed is xpassed (a strict xpass is reported by pytest as a
    failed call, so it lands on failed); a skip in any phase before the call
    is skipped.
    """
    verdict = TestOutcome.PASSED
    for phase in phases:
        if phase.when is TestPhase.CALL:
            if phase.wasxfail is not None:
                if phase.outcome is ReportOutcome.SKIPPED:
                    verdict = TestOutcome.XFAILED
                elif phase.outcome is ReportOutcome.PASSED:
                    verdict = TestOutcome.XPASSED
                else:
                    verdict = TestOutcome.FAILED
            elif phase.outcome is ReportOutcome.FAILED:
                verdict = TestOutcome.FAILED
            elif phase.outcome is ReportOutcome.SKIPPED:
                verdict = TestOutcome.SKIPPED
        elif phase.outcome is ReportOutcome.FAILED:
            return TestOutcome.ERROR
        elif phase.outcome is ReportOutcome.SKIPPED:
            verdict = TestOutcome.XFAILED if phase.wasxfail is not None else TestOutcome.SKIPPED
    return verdict


class ProjectSource(_Model):
    """Where the code under test is on a worker.

    Either ``path`` (a directory that exists on the worker, typically a shared
    or identical checkout) or ``repo`` + ``commit``: the worker clones the
    repository once into its cache and reuses the checkout for every later
    task at the same commit.
    """

    path: str | None = Field(default=None, min_length=1, max_length=4096)
    repo: str | None = Field(default=None, min_length=1, max_length=4096)
    commit: str | None = Field(default=None, pattern=COMMIT_PATTERN)

    @model_validator(mode="after")
    def _one_source(self) -> ProjectSource:
        if self.path is not None and (self.repo is not None or self.commit is not None):
            raise ValueError("give project.path, or project.repo with project.commit, not both")
        if self.path is None and self.repo is None:
            raise ValueError("give project.path, or project.repo with project.commit")
        if self.repo is not None and self.commit is None:
            raise ValueError("project.repo needs project.commit (a commit hash, not a branch)")
        if self.commit is not None and self.repo is None:
            raise ValueError("project.commit needs project.repo")
        return self

    def key(self) -> str:
        """What per-test duration history is kept under: the path, or the repo
        without the commit (durations carry over from one commit to the next)."""
        if self.path is not None:
            return f"path:{self.path}"
        return f"git:{self.repo}"


class TestConfig(_Model):
    """One chunk of a pytest run: run ``node_ids`` in ``project`` on one worker.

    ``args`` are the pytest arguments the run was started with (paths relative
    to the project directory, and options), minus those that only make sense
    on the machine that started it (``--junitxml``, ``--fleet``...): the
    worker's pytest session collects with them, so its node ids and options
    match the client's. Sessions are kept warm per (``run_id``, project,
    ``args``, ``env``, ``python``) between chunks of the same run.
    """

    __test__ = False

    run_id: str = Field(pattern=RUN_ID_PATTERN)
    project: ProjectSource
    args: list[Annotated[str, Field(max_length=65536)]] = Field(
        default_factory=list, max_length=4096
    )
    #: The tests to run. Empty: only start (warm) the run's pytest session on
    #: the worker, so the run's first chunk there finds it ready; the client
    #: sends one such task per slot while it is still collecting.
    node_ids: list[NodeId] = Field(default_factory=list, max_length=100_000)
    env: dict[EnvName, Annotated[str, Field(max_length=65536)]] = Field(default_factory=dict)
    #: The interpreter to run pytest with (must have pytest); the worker's own by default.
    python: str | None = Field(default=None, min_length=1, max_length=4096)
    #: 0 for the run's first pass; k for the k-th rerun of failed tests.
    rerun: int = Field(default=0, ge=0, le=100)
    #: Collect the whole suite in each worker session, as a serial run does,
    #: instead of only the files the session's chunks need (the default: every
    #: worker would otherwise pay for collecting everything). For suites whose
    #: tests rely on other test modules having been imported.
    full_collection: bool = False


class SessionInfo(_Model):
    """How the worker's pytest session for a chunk was set up (for the result)."""

    python: str = ""
    pytest_version: str = ""
    #: True when the chunk ran in a session already collected for this run.
    reused: bool = False
    collect_seconds: float = Field(default=0.0, ge=0)
    collected: int = Field(default=0, ge=0)
    restarts: int = Field(default=0, ge=0)


class TestChunkOutcome(_Model):
    """``results`` of a ``test`` attempt.

    ``tests`` has a record for every node id this attempt ran. Node ids an
    earlier attempt already reported are listed in ``already_reported`` and
    not run again; ``not_run`` lists those this attempt could not get to (the
    session failed to start, the attempt timed out or was cancelled) with the
    reason in the result's error.
    """

    __test__ = False

    run_id: str
    rerun: int = 0
    tests: list[TestRecord] = Field(default_factory=list)
    already_reported: list[NodeId] = Field(default_factory=list)
    not_run: list[NodeId] = Field(default_factory=list)
    session: SessionInfo = Field(default_factory=SessionInfo)


@dataclass(slots=True, frozen=True)
class TestResultRow:
    """One row of ``test_results``: one test of one ``test`` task, recorded once.

    Built by the coordinator's state from a worker's ``tests`` message or from
    the attempt's result, whichever arrives first; ``(task_id, nodeid)`` is
    the key, so a test reported by a lost attempt and seen again later is not
    counted twice. ``seq`` increases with every row the coordinator records,
    so a client can poll a run's new rows with ``after_seq``.
    """

    __test__ = False

    seq: int
    task_id: str
    nodeid: str
    attempt_id: int
    worker_id: str
    run_id: str
    project: str
    rerun: int
    outcome: TestOutcome
    duration_seconds: float
    crashed: bool
    recorded_time: float
    record: TestRecord
