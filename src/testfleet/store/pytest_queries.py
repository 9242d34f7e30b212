"""Read queries over ``test_results``: a run's recorded tests, its chunk tasks,
and per-test duration history.

Callers: :class:`~testfleet.store.store.Store` wraps each in a fresh cursor;
the REST API serves them to ``testfleet run`` / ``pytest --fleet`` (which
polls a run's new rows by ``seq`` and splits a suite by past durations), and
the coordinator's recovery reloads which tests open tasks already reported.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import duckdb

from testfleet.domain.enums import TaskStatus, TaskType
from testfleet.domain.pytest_tasks import TestResultRow
from testfleet.domain.records import TaskRecord
from testfleet.store.rows import TESTS, from_micros

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


@dataclass(frozen=True, slots=True)
class RunTask:
    """Where one task of a run is: what a polling client needs, without the
    spec (decoding every chunk's spec at every poll would cost more than the
    poll itself)."""

    task_id: str
    status: TaskStatus
    worker_id: str | None
    attempts: int
    start_time: float | None
    end_time: float | None
    error_class: str | None
    error_message: str | None
    unschedulable_reason: str | None

    @classmethod
    def of(cls, task: TaskRecord) -> RunTask:
        """The same view of a task the coordinator holds in memory."""
        return cls(
            task_id=task.task_id,
            status=task.status,
            worker_id=task.worker_id,
            attempts=task.attempts,
            start_time=task.start_time,
            end_time=task.end_time,
            error_class=None if task.error_class is None else task.error_class.value,
            error_message=task.error_message,
            unschedulable_reason=task.unschedulable_reason,
        )


def run_tasks(cursor: duckdb.DuckDBPyConnection, run_id: str) -> list[RunTask]:
    """Every ``test`` task whose config names ``run_id`` (its chunks and reruns)."""
    cursor.execute(
        "SELECT task_id, status, worker_id, attempts, epoch_us(start_time), "
        "epoch_us(end_time), error_class, error_message, unschedulable_reason "
        "FROM distributed_tasks "
        "WHERE type = ? AND json_extract_string(config, '$.run_id') = ? "
        "ORDER BY create_time, task_id",
        [TaskType.TEST.value, run_id],
    )
    return [
        RunTask(
            task_id=str(task_id),
            status=TaskStatus(status),
            worker_id=worker_id,
            attempts=int(attempts),
            start_time=from_micros(start),
            end_time=from_micros(end),
            error_class=error_class,
            error_message=error_message,
            unschedulable_reason=reason,
        )
        for (
            task_id,
            status,
            worker_id,
            attempts,
            start,
            end,
            error_class,
            error_message,
            reason,
        ) in cursor.fetchall()
    ]


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
