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

A record keeps every report pytest made for the test, in order, rather than a
single verdict: pytest counts categories per report (a test that passes and
then errors in teardown is "1 passed, 1 error"; each subtest is a ``call``
report of its own, counted as a subtest or as a failure), and the client can
only reproduce serial pytest's counts from the reports themselves.

Size: a record must fit in one frame even for a test with thousands of
subtests, and a chunk's result lists its records again. The worker
(``worker/pytest_sessions/report_data.py``) keeps the test's own reports whole
(each field capped as :mod:`testfleet.domain.pytest_limits` says, one
definition for the worker and this model), at most ``MAX_SUBTESTS_KEPT`` failed and as
many other subtest reports (the rest are counted in ``omitted_subtests``, and
the client still counts them), and gives subtest reports full text only
until ``SUBTEST_TEXT_BUDGET`` characters are used; after that each keeps
the end of its failure (the crash line) and a short description, no
captured output. A record is then at most about 14 MiB of JSON (8,192
failing subtests with long descriptions); a test with a few hundred passing
subtests is a few tens of kilobytes. :class:`TestRecord` refuses more text
than ``MAX_RECORD_TEXT_CHARS`` whatever sent it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from testfleet.domain.fields import EnvName
from testfleet.domain.pytest_limits import (
    MAX_KEYWORD_CHARS,
    MAX_KEYWORDS,
    MAX_LINE_NUMBER,
    MAX_LONGREPR_CHARS,
    MAX_NODE_ID_CHARS,
    MAX_PATH_CHARS,
    MAX_RECORD_TEXT_CHARS,
    MAX_REPORT_EXTRA_CHARS,
    MAX_REPORT_EXTRA_NAME_CHARS,
    MAX_REPORT_EXTRAS,
    MAX_REPORTS_PER_TEST,
    MAX_SECTION_CHARS,
    MAX_SECTIONS,
    MAX_SUBTEST_KEY_CHARS,
    MAX_SUBTEST_KWARGS,
    MAX_SUBTEST_VALUE_CHARS,
    MAX_USER_PROPERTIES,
    MAX_WARNING_CATEGORY_CHARS,
    MAX_WARNINGS,
    STANDARD_ATTRIBUTES,
)

#: The largest count or id a field accepts (DuckDB's BIGINT).
MAX_INT64 = 2**63 - 1
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
#: A git commit as a hex object name (abbreviated or full); branch names are
#: refused because they move and a run must be reproducible.
COMMIT_PATTERN = r"^[0-9a-fA-F]{7,40}$"

NodeId = Annotated[str, Field(min_length=1, max_length=MAX_NODE_ID_CHARS)]
#: A line number as pytest reports it (0-based in a location, 1-based in a skip).
LineNumber = Annotated[int, Field(ge=0, le=MAX_LINE_NUMBER)]
Count = Annotated[int, Field(ge=0, le=MAX_INT64)]
#: How many reports or warnings a worker counted without keeping them: the
#: client makes that many stand-ins, so the bound is what it can afford.
ReportCount = Annotated[int, Field(ge=0, le=2**31 - 1)]


class _Model(BaseModel):
    # inf and nan cannot be stored (DuckDB JSON) nor compared: refused at the edge.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TestPhase(StrEnum):
    """The phase of one pytest test a report belongs to."""

    __test__ = False  # not a pytest test class, despite the name

    SETUP = "setup"
    CALL = "call"
    TEARDOWN = "teardown"


class ReportOutcome(StrEnum):
    """pytest's ``TestReport.outcome`` for one report."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class TestOutcome(StrEnum):
    """One test's verdict, as stored and queried (derived from its reports)."""

    __test__ = False

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    XPASSED = "xpassed"
    #: The test called ``pytest.exit()`` or raised ``KeyboardInterrupt``:
    #: pytest stopped the whole run there (see :class:`Interruption`).
    INTERRUPTED = "interrupted"

    @property
    def is_failure(self) -> bool:
        """Failed or errored: what ``--rerun-failures`` reruns and what fails a run."""
        return self in (TestOutcome.FAILED, TestOutcome.ERROR)


class SkipLocation(_Model):
    """Where a skip was raised, as pytest keeps it for the short summary."""

    path: str = Field(max_length=MAX_PATH_CHARS)
    lineno: LineNumber | None = None
    reason: str = Field(default="", max_length=MAX_LONGREPR_CHARS)


class SubtestContext(_Model):
    """What a subtest report says about its subtest: pytest's ``SubtestContext``.

    ``msg`` and ``kwargs`` of ``TestCase.subTest(msg, **kwargs)`` or of the
    ``subtests.test(msg, **kwargs)`` fixture; pytest keeps each keyword value as
    its ``saferepr`` text, and so does the record. The client rebuilds pytest's
    ``SubtestReport`` from it, which pytest's reporting counts and names
    (``SUBFAILED[msg] (i=3)``).
    """

    msg: str | None = Field(default=None, max_length=MAX_LONGREPR_CHARS)
    kwargs: dict[
        Annotated[str, Field(max_length=MAX_SUBTEST_KEY_CHARS)],
        Annotated[str, Field(max_length=MAX_SUBTEST_VALUE_CHARS)],
    ] = Field(default_factory=dict, max_length=MAX_SUBTEST_KWARGS)


class PhaseReport(_Model):
    """One pytest ``TestReport`` (setup, call or teardown, or a subtest's call),
    reduced to plain data."""

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
        default_factory=list, max_length=MAX_SECTIONS
    )
    user_properties: list[tuple[str, str]] = Field(
        default_factory=list, max_length=MAX_USER_PROPERTIES
    )
    #: Set on a subtest's report (pytest's ``SubtestReport``).
    subtest: SubtestContext | None = None
    #: Attributes a plugin set on the report (JSON values only, capped), for
    #: plugins that read them back in their own hooks on the client.
    extras: dict[Annotated[str, Field(max_length=MAX_REPORT_EXTRA_NAME_CHARS)], JsonValue] = Field(
        default_factory=dict, max_length=MAX_REPORT_EXTRAS
    )

    @field_validator("extras")
    @classmethod
    def _small_extras(cls, extras: dict[str, JsonValue]) -> dict[str, JsonValue]:
        for name, value in extras.items():
            if name in STANDARD_ATTRIBUTES:
                raise ValueError(f"extra {name!r} is a field of pytest's own reports")
            if len(json.dumps(value)) > MAX_REPORT_EXTRA_CHARS:
                raise ValueError(f"extra {name!r} is over {MAX_REPORT_EXTRA_CHARS} characters")
        return extras

    def text_chars(self) -> int:
        """Characters of text this report holds (for the record's bound)."""
        chars = len(self.longrepr) + sum(len(content) for _, content in self.sections)
        if self.subtest is not None:
            chars += len(self.subtest.msg or "")
            chars += sum(len(k) + len(v) for k, v in self.subtest.kwargs.items())
        return chars


class OmittedSubtests(_Model):
    """Subtest reports of one test beyond :data:`MAX_SUBTESTS_KEPT`: counted, not kept.

    The client replays them as subtest reports saying they were omitted, so
    pytest's counts, JUnit totals and exit code stay those of a serial run.
    """

    passed: ReportCount = 0
    failed: ReportCount = 0
    skipped: ReportCount = 0
    #: Subtests that called ``pytest.xfail()`` (skipped, with ``wasxfail``).
    xfailed: ReportCount = 0

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped + self.xfailed


class InterruptKind(StrEnum):
    """How a test stopped its pytest session."""

    EXIT = "exit"  # pytest.exit()
    KEYBOARD_INTERRUPT = "keyboard_interrupt"


class Interruption(_Model):
    """A test that ended the whole session: serial pytest stops the run there,
    with this exit status, and so does the client."""

    kind: InterruptKind
    #: ``pytest.exit(reason)``'s reason ("" for a KeyboardInterrupt).
    message: str = Field(default="", max_length=MAX_LONGREPR_CHARS)
    #: ``pytest.exit(returncode=...)``; None: pytest's "interrupted" (2).
    returncode: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)


class TestLocation(_Model):
    """pytest's ``item.location``: file relative to rootdir, 0-based line, test name."""

    __test__ = False

    path: str = Field(max_length=MAX_PATH_CHARS)
    lineno: LineNumber | None = None
    domain: str = Field(default="", max_length=MAX_NODE_ID_CHARS)


class TestWarning(_Model):
    """A warning a test raised while it ran (pytest's ``pytest_warning_recorded``)."""

    __test__ = False

    message: str = Field(max_length=MAX_LONGREPR_CHARS)
    #: The warning class's name, e.g. "DeprecationWarning".
    category: str = Field(max_length=MAX_WARNING_CATEGORY_CHARS)
    filename: str = Field(default="", max_length=MAX_PATH_CHARS)
    lineno: LineNumber | None = None
    #: How many times the test raised this same warning: pytest counts each
    #: ("3 warnings"), so the client replays it as often.
    count: int = Field(default=1, ge=1, le=2**31 - 1)


class TestRecord(_Model):
    """Everything pytest reported for one test on one worker.

    ``phases`` holds every report in the order pytest made them: normally
    setup, call and teardown (a failed or skipped setup has no call), with
    one ``call`` report per subtest before the test's own call report.
    ``crashed`` marks a test whose pytest process died under it: its phases
    end with a synthesized failed report whose ``longrepr`` says so.
    ``interrupted`` marks a test that stopped the session (``pytest.exit()``):
    its phases are those pytest reported before that, possibly none.
    """

    __test__ = False

    nodeid: NodeId
    location: TestLocation
    keywords: list[Annotated[str, Field(max_length=MAX_KEYWORD_CHARS)]] = Field(
        default_factory=list, max_length=MAX_KEYWORDS
    )
    phases: list[PhaseReport] = Field(default_factory=list, max_length=MAX_REPORTS_PER_TEST)
    omitted_subtests: OmittedSubtests | None = None
    crashed: bool = False
    interrupted: Interruption | None = None
    warnings: list[TestWarning] = Field(default_factory=list, max_length=MAX_WARNINGS)
    #: Warnings beyond MAX_WARNINGS distinct ones: counted, not kept.
    warnings_omitted: ReportCount = 0

    @model_validator(mode="after")
    def _reports_and_size(self) -> TestRecord:
        if not self.phases and self.interrupted is None:
            raise ValueError("phases: a test record needs at least one report")
        text = sum(phase.text_chars() for phase in self.phases)
        if text > MAX_RECORD_TEXT_CHARS:
            raise ValueError(
                f"phases: {text} characters of text, over the {MAX_RECORD_TEXT_CHARS} a record "
                "may hold (subtest reports past the budget keep only their crash line)"
            )
        return self

    @property
    def outcome(self) -> TestOutcome:
        if self.interrupted is not None:
            return TestOutcome.INTERRUPTED
        omitted_failure = self.omitted_subtests is not None and self.omitted_subtests.failed > 0
        verdict = derive_outcome(self.phases)
        if omitted_failure and verdict is not TestOutcome.ERROR:
            return TestOutcome.FAILED
        return verdict

    @property
    def duration_seconds(self) -> float:
        # A subtest's time is part of its test's call, already counted.
        return sum(phase.duration for phase in self.phases if phase.subtest is None)

    @property
    def failure_text(self) -> str:
        """The first failing report's text ("" when nothing failed)."""
        for phase in self.phases:
            if phase.outcome is ReportOutcome.FAILED:
                return phase.longrepr
        return ""


def derive_outcome(phases: list[PhaseReport]) -> TestOutcome:
    """One verdict from a test's reports, by pytest's rules.

    A failed setup or teardown is an error (even after a passing call); a
    failed call is a failure; an xfail-marked call that failed is xfailed and
    one that passed is xpassed (a strict xpass is reported by pytest as a
    failed call, so it lands on failed); a skip in any phase before the call
    is skipped. A failed subtest fails its test, unless the test is an error
    already: pytest counts the subtest as a failure and the run fails because
    of it, whatever the test's own call said, and ``--rerun-failures`` must
    rerun it. Other subtest reports (passed, skipped, xfailed) leave the
    verdict to the test's own reports.
    """
    verdict = TestOutcome.PASSED
    failed_subtest = False
    for phase in phases:
        if phase.subtest is not None:
            failed_subtest |= phase.outcome is ReportOutcome.FAILED
            continue
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
    return TestOutcome.FAILED if failed_subtest else verdict


class PytestPlugin(_Model):
    """An installed pytest plugin (a ``pytest11`` entry point) a run's pytest loaded."""

    #: The entry point's name, as ``-p NAME`` / ``-p no:NAME`` take it ("asyncio").
    name: str = Field(min_length=1, max_length=256)
    #: The distribution that provides it ("pytest-asyncio"), for messages.
    distribution: str = Field(default="", max_length=256)
    version: str = Field(default="", max_length=256)

    def describe(self) -> str:
        """ "pytest-asyncio 1.5.0 (plugin 'asyncio')", for messages."""
        if not self.distribution:
            return f"plugin {self.name!r}"
        return f"{self.distribution} {self.version} (plugin {self.name!r})".replace("  ", " ")


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
    #: The installed plugins (``pytest11`` entry points) the run's own pytest
    #: loaded on the machine that started it. A worker's session loads exactly
    #: these, blocking any other its interpreter's environment has: serial
    #: pytest on that machine is what the run must reproduce, and a worker
    #: installed with more (testfleet's development extras add pytest-asyncio)
    #: must not add them to a suite that never asked for them. One the worker
    #: lacks stops the session with a message naming it. None (a client that
    #: does not say): whatever pytest loads by itself in the worker's environment.
    plugins: list[PytestPlugin] | None = Field(default=None, max_length=1024)


class SessionInfo(_Model):
    """How the worker's pytest session for a chunk was set up (for the result)."""

    python: str = ""
    pytest_version: str = ""
    #: True when the chunk ran in a session already collected for this run.
    reused: bool = False
    collect_seconds: float = Field(default=0.0, ge=0)
    collected: Count = 0
    restarts: Count = 0


class TestChunkOutcome(_Model):
    """``results`` of a ``test`` attempt.

    ``tests`` has a record for every node id this attempt ran. Node ids an
    earlier attempt already reported are listed in ``already_reported`` and
    not run again; ``not_run`` lists those this attempt could not get to (the
    session failed to start, the attempt timed out or was cancelled, a test
    stopped the session with ``pytest.exit()``) with the reason in the
    result's error. ``tests`` repeats records the attempt streamed already;
    past a size budget some of them are slimmed (see the executor), the
    streamed ones never.
    """

    __test__ = False

    run_id: str
    rerun: int = Field(default=0, ge=0, le=100)
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
