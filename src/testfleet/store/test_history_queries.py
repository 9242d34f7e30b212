"""Read queries for the dashboard's Test runs and Tests pages and the flaky-tests gauge.

Callers: :class:`~testfleet.store.store.Store` through :class:`TestHistoryTables`
(a mixin, as ``alert_queries.AlertTables`` is), each on a fresh cursor in a
thread: the pages of :mod:`testfleet.coordinator.dashboard.test_pages` and the
``testfleet_flaky_tests`` gauge (:mod:`testfleet.coordinator.flaky_tests_metric`).

A run is the set of ``test`` tasks whose config names its ``run_id``; its
total is the sum of the node ids its first-pass chunks carry (reruns repeat
node ids already counted). A test's verdict in a run is its outcome at the
highest rerun that reported it (``arg_max(outcome, rerun)``), so a test that
failed and then passed on a rerun counts as passed, and as *passed on rerun*.

Every query is bounded so 1,000,000 ``test_results`` rows stay fast: the run
list by its newest runs, a run's history by the tests it lists and the
project's last :data:`HISTORY_RUNS` runs, the tests page by the last
:data:`HISTORY_RUNS` runs of each test, aggregated in SQL (window functions,
``quantile_cont``), never in Python loops over rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from testfleet.domain.enums import TERMINAL_TASK_STATUSES, TaskType
from testfleet.domain.pytest_tasks import TestOutcome
from testfleet.store.rows import from_micros, to_micros
from testfleet.store.security_tables import StoreTransactions

#: Runs of a project (or of a test) the history looks back over.
HISTORY_RUNS = 20

_FAILURES = (TestOutcome.FAILED.value, TestOutcome.ERROR.value)
_PASSED = TestOutcome.PASSED.value
# A test_results row of one project. Not ``project = ?``: DuckDB 1.5 pushes that
# equality into the scan of the (few-valued, indexed) column, which took 130-250 ms
# over 1,000,000 rows of one project against 5 ms for the same filter evaluated
# after the scan (benchmarks/dashboard_pages.py); the concatenation keeps it there.
_OF_PROJECT = "project || '' = ?"
# ProjectSource.key() in SQL, from a task's config (test_results stores the key).
_PROJECT_KEY = (
    "coalesce('path:' || json_extract_string(config, '$.project.path'), "
    "'git:' || json_extract_string(config, '$.project.repo'))"
)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run as the run list and the run page's header show it."""

    run_id: str
    project: str
    #: When its first task was created; when its last task ended (None while open).
    started: float
    ended: float | None
    chunks: int
    open_chunks: int
    #: Node ids its first-pass chunks carry.
    total: int
    #: Distinct node ids recorded so far.
    done: int
    #: Tests whose verdict is failed or error.
    failed: int
    #: Tests that passed only on a rerun.
    passed_on_rerun: int

    @property
    def running(self) -> bool:
        return self.open_chunks > 0


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """One chunk task of a run: where it ran, when, and how many tests it has reported."""

    task_id: str
    status: str
    worker_id: str | None
    start_time: float | None
    end_time: float | None
    rerun: int
    node_ids: int
    reported: int


@dataclass(frozen=True, slots=True)
class RunTest:
    """One test's verdict in a run (failing and slowest lists)."""

    nodeid: str
    outcome: TestOutcome
    duration_seconds: float
    #: Highest rerun that reported it (0: the first pass only).
    rerun: int
    worker_id: str


@dataclass(frozen=True, slots=True)
class PastVerdict:
    """A test's verdict in one earlier run of the project (newest first in lists)."""

    nodeid: str
    run_id: str
    started: float
    outcome: TestOutcome
    passed_on_rerun: bool


@dataclass(frozen=True, slots=True)
class TestStats:
    """One test over its last :data:`HISTORY_RUNS` runs (the tests page)."""

    __test__ = False

    nodeid: str
    runs: int
    passed: int
    failed: int
    passed_on_rerun: int
    #: Verdict changes between consecutive decided runs (passed vs failed/error).
    flips: int
    p50_seconds: float | None
    p95_seconds: float | None
    #: Newest first: (run id, verdict, passed on rerun, duration seconds).
    recent: list[tuple[str, TestOutcome, bool, float]]

    @property
    def pass_rate(self) -> float | None:
        decided = self.passed + self.failed
        return None if decided == 0 else self.passed / decided


def _summaries(
    cursor: duckdb.DuckDBPyConnection, where: str, params: list[object], limit: int
) -> list[RunSummary]:
    terminal = [status.value for status in TERMINAL_TASK_STATUSES]
    cursor.execute(
        "WITH runs AS ("
        "  SELECT json_extract_string(config, '$.run_id') AS run_id, "
        f"   any_value({_PROJECT_KEY}) AS project, "
        "    epoch_us(min(create_time)) AS started, "
        "    epoch_us(max(end_time)) AS ended, count(*) AS chunks, "
        "    count(*) FILTER (WHERE status NOT IN (SELECT unnest(?))) AS open_chunks, "
        "    coalesce(sum(json_array_length(config, '$.node_ids')) FILTER ("
        "      WHERE coalesce(json_extract(config, '$.rerun')::INTEGER, 0) = 0), 0) AS total "
        f"  FROM distributed_tasks WHERE type = ? {where} GROUP BY 1 "
        "  ORDER BY started DESC, run_id LIMIT ?), "
        "verdicts AS ("
        "  SELECT run_id, nodeid, arg_max(outcome, rerun) AS outcome, max(rerun) AS top "
        "  FROM test_results WHERE run_id IN (SELECT run_id FROM runs) GROUP BY run_id, nodeid), "
        "counts AS ("
        "  SELECT run_id, count(*) AS done, "
        "    count(*) FILTER (WHERE outcome IN (SELECT unnest(?))) AS failed, "
        "    count(*) FILTER (WHERE outcome = ? AND top > 0) AS rerun_passed "
        "  FROM verdicts GROUP BY run_id) "
        "SELECT r.run_id, r.project, r.started, r.ended, r.chunks, r.open_chunks, r.total, "
        "  coalesce(c.done, 0), coalesce(c.failed, 0), coalesce(c.rerun_passed, 0) "
        "FROM runs r LEFT JOIN counts c USING (run_id) ORDER BY r.started DESC, r.run_id",
        [terminal, TaskType.TEST.value, *params, limit, list(_FAILURES), _PASSED],
    )
    return [
        RunSummary(
            run_id=str(run_id),
            project=str(project or ""),
            started=from_micros(started) or 0.0,
            ended=None if open_chunks else from_micros(ended),
            chunks=int(chunks),
            open_chunks=int(open_chunks),
            total=int(total),
            done=int(done),
            failed=int(failed),
            passed_on_rerun=int(rerun_passed),
        )
        for (
            run_id,
            project,
            started,
            ended,
            chunks,
            open_chunks,
            total,
            done,
            failed,
            rerun_passed,
        ) in cursor.fetchall()
        if run_id is not None
    ]


def recent_runs(
    cursor: duckdb.DuckDBPyConnection, *, project: str | None = None, limit: int = 50
) -> list[RunSummary]:
    """The newest ``limit`` runs (of ``project`` if given), newest first."""
    if project is None:
        return _summaries(cursor, "", [], limit)
    return _summaries(cursor, f"AND {_PROJECT_KEY} = ?", [project], limit)


def run_summary(cursor: duckdb.DuckDBPyConnection, run_id: str) -> RunSummary | None:
    """One run's summary, or None when no test task names ``run_id``."""
    found = _summaries(cursor, "AND json_extract_string(config, '$.run_id') = ?", [run_id], 1)
    return found[0] if found else None


def run_chunks(cursor: duckdb.DuckDBPyConnection, run_id: str, limit: int) -> list[ChunkRow]:
    """The run's chunk tasks (first ``limit`` by creation), with tests reported each."""
    cursor.execute(
        "WITH chunks AS ("
        "  SELECT task_id, status, worker_id, epoch_us(start_time) AS s, epoch_us(end_time) AS e, "
        "    coalesce(json_extract(config, '$.rerun')::INTEGER, 0) AS rerun, "
        "    coalesce(json_array_length(config, '$.node_ids'), 0) AS nodes, create_time "
        "  FROM distributed_tasks "
        "  WHERE type = ? AND json_extract_string(config, '$.run_id') = ? "
        "  ORDER BY create_time, task_id LIMIT ?), "
        "reported AS (SELECT task_id, count(*) AS n FROM test_results "
        "  WHERE run_id = ? GROUP BY task_id) "
        "SELECT c.task_id, c.status, c.worker_id, c.s, c.e, c.rerun, c.nodes, coalesce(r.n, 0) "
        "FROM chunks c LEFT JOIN reported r USING (task_id) ORDER BY c.create_time, c.task_id",
        [TaskType.TEST.value, run_id, limit, run_id],
    )
    return [
        ChunkRow(
            task_id=str(task_id),
            status=str(status),
            worker_id=worker_id,
            start_time=from_micros(start),
            end_time=from_micros(end),
            rerun=int(rerun),
            node_ids=int(nodes),
            reported=int(reported),
        )
        for task_id, status, worker_id, start, end, rerun, nodes, reported in cursor.fetchall()
    ]


def _run_tests(cursor: duckdb.DuckDBPyConnection) -> list[RunTest]:
    return [
        RunTest(
            nodeid=str(nodeid),
            outcome=TestOutcome(outcome),
            duration_seconds=float(duration),
            rerun=int(rerun),
            worker_id=str(worker_id),
        )
        for nodeid, outcome, duration, rerun, worker_id in cursor.fetchall()
    ]


def run_problem_tests(cursor: duckdb.DuckDBPyConnection, run_id: str, limit: int) -> list[RunTest]:
    """Tests of the run whose verdict is a failure, or that passed only on a rerun
    (failures first, then by node id), at most ``limit``."""
    cursor.execute(
        "SELECT nodeid, arg_max(outcome, rerun) AS verdict, arg_max(duration_seconds, rerun), "
        "  max(rerun) AS top, arg_max(worker_id, rerun) "
        "FROM test_results WHERE run_id = ? GROUP BY nodeid "
        "HAVING verdict IN (SELECT unnest(?)) OR (verdict = ? AND top > 0) "
        "ORDER BY verdict = ?, nodeid LIMIT ?",
        [run_id, list(_FAILURES), _PASSED, _PASSED, limit],
    )
    return _run_tests(cursor)


def run_slowest_tests(cursor: duckdb.DuckDBPyConnection, run_id: str, limit: int) -> list[RunTest]:
    """The run's ``limit`` slowest first-pass tests."""
    cursor.execute(
        "SELECT nodeid, outcome, duration_seconds, rerun, worker_id FROM test_results "
        "WHERE run_id = ? AND rerun = 0 ORDER BY duration_seconds DESC, nodeid LIMIT ?",
        [run_id, limit],
    )
    return _run_tests(cursor)


_EARLIER_RUNS = (
    "WITH runs AS ("
    "  SELECT run_id, min(seq) AS first_seq, epoch_us(min(recorded_time)) AS started "
    f"  FROM test_results WHERE {_OF_PROJECT} GROUP BY run_id), "
    "earlier AS ("
    "  SELECT * FROM runs WHERE first_seq < coalesce("
    "    (SELECT first_seq FROM runs WHERE run_id = ?), 9223372036854775807) "
    "    AND run_id <> ? ORDER BY first_seq DESC LIMIT ?) "
)


def earlier_runs(
    cursor: duckdb.DuckDBPyConnection, run_id: str, project: str, runs: int = HISTORY_RUNS
) -> list[str]:
    """The project's last ``runs`` runs before ``run_id`` (by each run's first
    recorded test), newest first."""
    cursor.execute(
        _EARLIER_RUNS + "SELECT run_id FROM earlier ORDER BY first_seq DESC",
        [project, run_id, run_id, runs],
    )
    return [str(run) for (run,) in cursor.fetchall()]


def past_verdicts(
    cursor: duckdb.DuckDBPyConnection,
    run_id: str,
    project: str,
    nodeids: Sequence[str],
    runs: int = HISTORY_RUNS,
) -> list[PastVerdict]:
    """The verdicts of ``nodeids`` in the project's last ``runs`` runs before
    ``run_id`` (ordered by each run's first recorded row), newest run first."""
    if not nodeids:
        return []
    cursor.execute(
        _EARLIER_RUNS
        + "SELECT t.nodeid, t.run_id, any_value(e.started), arg_max(t.outcome, t.rerun) AS v, "
        "  max(t.rerun), any_value(e.first_seq) AS f "
        "FROM test_results t JOIN earlier e USING (run_id) "
        "WHERE t.project || '' = ? AND t.nodeid IN (SELECT unnest(?)) "
        "GROUP BY t.nodeid, t.run_id ORDER BY t.nodeid, f DESC",
        [project, run_id, run_id, runs, project, list(nodeids)],
    )
    return [
        PastVerdict(
            nodeid=str(nodeid),
            run_id=str(past_run),
            started=from_micros(started) or 0.0,
            outcome=TestOutcome(outcome),
            passed_on_rerun=outcome == _PASSED and int(top) > 0,
        )
        for nodeid, past_run, started, outcome, top, _first in cursor.fetchall()
    ]


def tested_projects(cursor: duckdb.DuckDBPyConnection) -> list[str]:
    """Every project key with recorded tests, the most recently tested first."""
    cursor.execute(
        "SELECT project FROM test_results GROUP BY project ORDER BY max(seq) DESC LIMIT 200"
    )
    return [str(project) for (project,) in cursor.fetchall()]


def per_test_stats(
    cursor: duckdb.DuckDBPyConnection,
    project: str,
    *,
    contains: str | None = None,
    runs: int = HISTORY_RUNS,
    limit: int = 500,
) -> list[TestStats]:
    """Per test of ``project`` (whose node id contains ``contains``), over its last
    ``runs`` runs: the flakiest first, then the most failing, then by node id."""
    where = _OF_PROJECT
    params: list[object] = [project]
    if contains:
        where += " AND contains(nodeid, ?)"
        params.append(contains)
    cursor.execute(
        "WITH verdicts AS ("
        "  SELECT nodeid, run_id, arg_max(outcome, rerun) AS outcome, max(rerun) AS top, "
        "    arg_min(duration_seconds, rerun) AS duration, max(seq) AS last_seq "
        f"  FROM test_results WHERE {where} GROUP BY nodeid, run_id), "
        "ranked AS ("
        "  SELECT *, row_number() OVER (PARTITION BY nodeid ORDER BY last_seq DESC) AS recent "
        "  FROM verdicts), "
        "window_ AS ("
        "  SELECT *, outcome IN (SELECT unnest(?)) AS failing, "
        "    outcome = ? OR outcome IN (SELECT unnest(?)) AS decided "
        "  FROM ranked WHERE recent <= ?), "
        "flipped AS ("
        "  SELECT *, lag(CASE WHEN decided THEN failing END IGNORE NULLS) OVER ("
        "    PARTITION BY nodeid ORDER BY last_seq) AS before FROM window_) "
        "SELECT nodeid, count(*) AS runs, count(*) FILTER (WHERE outcome = ?) AS passed, "
        "  count(*) FILTER (WHERE failing) AS failed, "
        "  count(*) FILTER (WHERE outcome = ? AND top > 0) AS rerun_passed, "
        "  count(*) FILTER (WHERE decided AND before IS NOT NULL AND before <> failing) AS flips, "
        "  quantile_cont(duration, 0.5), quantile_cont(duration, 0.95), "
        "  list(run_id ORDER BY last_seq DESC), list(outcome ORDER BY last_seq DESC), "
        "  list(top ORDER BY last_seq DESC), list(duration ORDER BY last_seq DESC) "
        "FROM flipped GROUP BY nodeid "
        "ORDER BY flips + rerun_passed DESC, failed DESC, nodeid LIMIT ?",
        [
            *params,
            list(_FAILURES),
            _PASSED,
            list(_FAILURES),
            runs,
            _PASSED,
            _PASSED,
            limit,
        ],
    )
    out = []
    for row in cursor.fetchall():
        nodeid, count, passed, failed, rerun_passed, flips, p50, p95 = row[:8]
        run_ids, outcomes, tops, durations = row[8:]
        out.append(
            TestStats(
                nodeid=str(nodeid),
                runs=int(count),
                passed=int(passed),
                failed=int(failed),
                passed_on_rerun=int(rerun_passed),
                flips=int(flips),
                p50_seconds=None if p50 is None else float(p50),
                p95_seconds=None if p95 is None else float(p95),
                recent=[
                    (str(r), TestOutcome(o), o == _PASSED and int(t) > 0, float(d))
                    for r, o, t, d in zip(run_ids, outcomes, tops, durations, strict=True)
                ],
            )
        )
    return out


def count_flaky_tests(cursor: duckdb.DuckDBPyConnection, since: float) -> int:
    """Tests (project, node id) recorded at or after ``since`` that passed only on
    a rerun, or whose first-pass verdicts in that window both passed and failed."""
    cursor.execute(
        "SELECT count(*) FROM ("
        "  SELECT bool_or(outcome = ? AND rerun > 0) AS rerun_passed, "
        "    count(DISTINCT CASE WHEN rerun = 0 AND outcome = ? THEN 1 "
        "      WHEN rerun = 0 AND outcome IN (SELECT unnest(?)) THEN 2 END) AS kinds "
        "  FROM test_results WHERE recorded_time >= make_timestamp(?) "
        "  GROUP BY project, nodeid) WHERE rerun_passed OR kinds > 1",
        [_PASSED, _PASSED, list(_FAILURES), to_micros(since)],
    )
    row = cursor.fetchone()
    assert row is not None  # an aggregate always returns one row
    return int(row[0])


class TestHistoryTables:
    """The test-history reads of :class:`~testfleet.store.store.Store` (the
    contract's ``StoreReader``), each on a fresh cursor."""

    __test__ = False

    def recent_runs(
        self: StoreTransactions, *, project: str | None = None, limit: int = 50
    ) -> list[RunSummary]:
        return self._read(
            "list test runs", lambda cursor: recent_runs(cursor, project=project, limit=limit)
        )

    def run_summary(self: StoreTransactions, run_id: str) -> RunSummary | None:
        return self._read("read a test run", lambda cursor: run_summary(cursor, run_id))

    def run_chunks(self: StoreTransactions, run_id: str, limit: int = 500) -> list[ChunkRow]:
        return self._read("read a run's chunks", lambda cursor: run_chunks(cursor, run_id, limit))

    def run_problem_tests(self: StoreTransactions, run_id: str, limit: int = 200) -> list[RunTest]:
        return self._read(
            "read a run's failing tests", lambda cursor: run_problem_tests(cursor, run_id, limit)
        )

    def run_slowest_tests(self: StoreTransactions, run_id: str, limit: int = 10) -> list[RunTest]:
        return self._read(
            "read a run's slowest tests", lambda cursor: run_slowest_tests(cursor, run_id, limit)
        )

    def earlier_runs(
        self: StoreTransactions, run_id: str, project: str, runs: int = HISTORY_RUNS
    ) -> list[str]:
        return self._read(
            "read a project's earlier runs",
            lambda cursor: earlier_runs(cursor, run_id, project, runs),
        )

    def past_verdicts(
        self: StoreTransactions,
        run_id: str,
        project: str,
        nodeids: Sequence[str],
        runs: int = HISTORY_RUNS,
    ) -> list[PastVerdict]:
        return self._read(
            "read tests' earlier verdicts",
            lambda cursor: past_verdicts(cursor, run_id, project, nodeids, runs),
        )

    def tested_projects(self: StoreTransactions) -> list[str]:
        return self._read("list tested projects", tested_projects)

    def per_test_stats(
        self: StoreTransactions,
        project: str,
        *,
        contains: str | None = None,
        runs: int = HISTORY_RUNS,
        limit: int = 500,
    ) -> list[TestStats]:
        return self._read(
            "read test statistics",
            lambda cursor: per_test_stats(
                cursor, project, contains=contains, runs=runs, limit=limit
            ),
        )

    def count_flaky_tests(self: StoreTransactions, since: float) -> int:
        return self._read("count flaky tests", lambda cursor: count_flaky_tests(cursor, since))
