"""What the Test runs and Tests pages show, from the store's rows: pure functions.

Callers: :mod:`.test_pages` (the routes), with the rows of
:mod:`testfleet.store.test_history_queries` read in a thread. No clock reads
and no store: the unit tests build every view from rows on fixed times.

* :func:`eta`: seconds left in a run, from its done rate so far (None,
  shown "unknown", until a test has finished).
* :func:`worker_chunks`: the run's chunks per worker with their first start
  and last end (the run page's table of chunks over time).
* :func:`classify`: why a failing test fails: **new** (passed or absent in
  the project's previous run), **failing since** a run (consecutive failures
  back through earlier runs), or **flaky** (passed only on a rerun, here or in
  a recent run, or flipped verdict more than once in recent runs).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

from testfleet.domain.enums import TaskStatus
from testfleet.domain.pytest_tasks import TestOutcome
from testfleet.store.test_history_queries import ChunkRow, PastVerdict, RunTest

#: Verdict flips (pass to fail or back) across recent runs that mark a test flaky.
FLAKY_FLIPS = 2


def eta(total: int, done: int, started: float, now: float) -> float | None:
    """Seconds until ``total`` tests are done at the rate ``done`` took since
    ``started``; 0 once all are done; None while there is no rate yet."""
    if total <= 0 or done >= total:
        return 0.0 if total > 0 else None
    elapsed = now - started
    if done <= 0 or elapsed <= 0:
        return None
    return (total - done) * elapsed / done


@dataclass(frozen=True, slots=True)
class WorkerChunks:
    """One worker's share of a run."""

    worker_id: str
    chunks: int
    running: int
    tests_reported: int
    first_start: float | None
    last_end: float | None
    #: Its chunks in start order (the page lists them under the worker's row).
    items: tuple[ChunkRow, ...] = ()


def worker_chunks(chunks: Sequence[ChunkRow]) -> list[WorkerChunks]:
    """Chunks per worker (assigned ones only), the busiest first."""
    by_worker: dict[str, list[ChunkRow]] = defaultdict(list)
    for chunk in chunks:
        if chunk.worker_id is not None:
            by_worker[chunk.worker_id].append(chunk)
    rows = []
    for worker_id, own in by_worker.items():
        starts = [c.start_time for c in own if c.start_time is not None]
        ends = [c.end_time for c in own if c.end_time is not None]
        rows.append(
            WorkerChunks(
                worker_id=worker_id,
                chunks=len(own),
                running=sum(1 for c in own if not TaskStatus(c.status).is_terminal),
                tests_reported=sum(c.reported for c in own),
                first_start=min(starts) if starts else None,
                last_end=max(ends) if ends else None,
                items=tuple(sorted(own, key=lambda c: (c.start_time or 0.0, c.task_id))),
            )
        )
    return sorted(rows, key=lambda r: (-r.chunks, r.worker_id))


class FailureKind(StrEnum):
    """Why a test of a finished run is listed as a problem."""

    NEW = "new"
    FAILING_SINCE = "failing since"
    FLAKY = "flaky"


@dataclass(frozen=True, slots=True)
class ProblemTest:
    """One failing (or passed-on-rerun) test of a run, classified."""

    test: RunTest
    kind: FailureKind
    #: FAILING_SINCE: the earliest run of the unbroken streak of failures, and when.
    since_run: str | None = None
    since_time: float | None = None
    #: Consecutive failing runs, this one included.
    streak: int = 1


def _flips(verdicts: Sequence[bool]) -> int:
    return sum(1 for before, after in pairwise(verdicts) if before != after)


def classify(
    test: RunTest, earlier_runs: Sequence[str], earlier: Sequence[PastVerdict]
) -> ProblemTest:
    """Classify ``test`` of a run by the project's ``earlier_runs`` (ids, newest
    first) and the test's verdicts in them (``earlier``; see the module docstring).
    A run where the test is absent breaks a streak of failures."""
    failing_now = test.outcome.is_failure
    if not failing_now or any(v.passed_on_rerun for v in earlier):
        return ProblemTest(test, FailureKind.FLAKY)
    by_run = {v.run_id: v for v in earlier}
    decided = [
        by_run[run].outcome.is_failure
        for run in earlier_runs
        if run in by_run
        and (by_run[run].outcome.is_failure or by_run[run].outcome is TestOutcome.PASSED)
    ]
    if _flips([True, *decided]) >= FLAKY_FLIPS:
        return ProblemTest(test, FailureKind.FLAKY)
    streak: list[PastVerdict] = []
    for run in earlier_runs:
        verdict = by_run.get(run)
        if verdict is None or not verdict.outcome.is_failure:
            break
        streak.append(verdict)
    if not streak:
        return ProblemTest(test, FailureKind.NEW)
    return ProblemTest(
        test,
        FailureKind.FAILING_SINCE,
        since_run=streak[-1].run_id,
        since_time=streak[-1].started,
        streak=len(streak) + 1,
    )


def classify_all(
    tests: Sequence[RunTest], earlier_runs: Sequence[str], earlier: Sequence[PastVerdict]
) -> list[ProblemTest]:
    """:func:`classify` each of ``tests`` with its own verdicts from ``earlier``."""
    by_test: dict[str, list[PastVerdict]] = defaultdict(list)
    for verdict in earlier:
        by_test[verdict.nodeid].append(verdict)
    return [classify(test, earlier_runs, by_test.get(test.nodeid, [])) for test in tests]
