"""Read queries over ``test_results``: a run's recorded tests, its chunk tasks,
and per-test duration history.

Callers: :class:`~testfleet.store.store.Store` wraps each in a fresh cursor;
the REST API serves them to ``testfleet run`` / ``pytest --fleet`` (which
polls a run's new rows by ``seq`` and splits a suite by past durations), and
the coordinator's recovery reloads which tests open tasks already reported.
"""

from __future__ import annotations

from collections.abc import Collection

import duckdb

from testfleet.domain.enums import TaskType
from testfleet.domain.records import TaskRecord
from testfleet.domain.testing import TestResultRow
from testfleet.store.rows import TASKS, TESTS

#: Duration history uses each test's most recent runs, so a test that got
#: slower (or faster) is split by what it costs now.
DURATION_HISTORY_RUNS = 5


def run_test_rows(
    cursor: duckdb.DuckDBPyConnection, run_id: str, *, after_seq: int, limit: int
) -> list[TestResultRow]:
    """A run's recorded tests with ``seq > after_seq``, in ``seq`` order (one page).

    Rows are committed in ``seq`` order, so a reader that passes the last
    ``seq`` it saw never misses one.
    """
    cursor.execute(
        f"SELECT {TESTS.select_list()} FROM test_results WHERE run_id = ? AND seq > ? "
        "ORDER BY seq LIMIT ?",
        [run_id, after_seq, limit],
    )
    return [TESTS.from_row(row) for row in cursor.fetchall()]


def run_tasks(cursor: duckdb.DuckDBPyConnection, run_id: str) -> list[TaskRecord]:
    """Every ``test`` task whose config names ``run_id`` (its chunks and reruns)."""
    cursor.execute(
        f"SELECT {TASKS.select_list()} FROM distributed_tasks "
        "WHERE type = ? AND json_extract_string(config, '$.run_id') = ? "
        "ORDER BY create_time, task_id",
        [TaskType.TEST.value, run_id],
    )
    return [TASKS.from_row(row) for row in cursor.fetchall()]


def test_durations(cursor: duckdb.DuckDBPyConnection, project: str) -> dict[str, float]:
    """Median duration (seconds) per node id over its last few runs in ``project``.

    Crashed tests are left out: the time to a crash says nothing about the
    test's cost.
    """
    cursor.execute(
        "SELECT nodeid, median(duration_seconds) FROM ("
        "  SELECT nodeid, duration_seconds, row_number() OVER ("
        "    PARTITION BY nodeid ORDER BY seq DESC) AS recent"
        "  FROM test_results WHERE project = ? AND NOT crashed"
        f") WHERE recent <= {DURATION_HISTORY_RUNS} GROUP BY nodeid",
        [project],
    )
    return {str(nodeid): float(seconds) for nodeid, seconds in cursor.fetchall()}


def reported_tests(
    cursor: duckdb.DuckDBPyConnection, task_ids: Collection[str]
) -> dict[str, set[str]]:
    """Node ids recorded so far for each of ``task_ids`` (recovery of open test tasks)."""
    found: dict[str, set[str]] = {}
    if not task_ids:
        return found
    cursor.execute(
        "SELECT task_id, nodeid FROM test_results WHERE task_id IN (SELECT unnest(?))",
        [list(task_ids)],
    )
    for task_id, nodeid in cursor.fetchall():
        found.setdefault(str(task_id), set()).add(str(nodeid))
    return found


def next_test_seq(cursor: duckdb.DuckDBPyConnection) -> int:
    """One more than the largest ``seq`` recorded."""
    row = cursor.execute("SELECT coalesce(max(seq), 0) FROM test_results").fetchone()
    assert row is not None  # an aggregate always returns one row
    return int(row[0]) + 1
