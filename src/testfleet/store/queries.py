"""Read queries: what the coordinator reloads on restart and what the API shows.

Callers: ``Store``'s read methods call these with a fresh cursor each (DuckDB
cursors are separate connections, safe to use from the API's handler threads
while the writer commits). Each query selects a table's columns through its
:class:`~testfleet.store.rows.TableMapping` so rows come back as the same
records the coordinator wrote. No function here writes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from testfleet.domain.enums import (
    TERMINAL_TASK_STATUSES,
    AttemptStatus,
    ShownStatus,
    TaskStatus,
    TaskType,
)
from testfleet.domain.records import (
    AttemptRecord,
    RecoveredState,
    ResultRecord,
    TaskRecord,
    WorkerRecord,
)
from testfleet.store import pytest_queries
from testfleet.store.errors import StoreError
from testfleet.store.rows import ATTEMPTS, RESULTS, TASKS, WORKERS, TableMapping

R = TypeVar("R")

_TERMINAL = sorted(s.value for s in TERMINAL_TASK_STATUSES)
_OPEN_ATTEMPT = [AttemptStatus.ASSIGNED.value, AttemptStatus.RUNNING.value]


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def load_state(cursor: duckdb.DuckDBPyConnection) -> RecoveredState:
    """What a restarting coordinator needs: open tasks, their live attempts, all workers.

    An attempt counts as open when it is its task's current attempt and is
    still assigned or running; an older attempt or a finished one is history.
    ``next_attempt_id`` looks at results too, so a result whose attempt row
    were somehow missing could still never have its id reused.
    """
    unreadable: list[str] = []
    cursor.execute(
        f"SELECT {TASKS.select_list()} FROM distributed_tasks "
        f"WHERE status NOT IN ({_placeholders(len(_TERMINAL))}) ORDER BY create_time, task_id",
        _TERMINAL,
    )
    tasks = _readable(TASKS, cursor.fetchall(), unreadable)
    cursor.execute(
        f"SELECT {ATTEMPTS.select_list('h')} FROM task_execution_history h "
        "JOIN distributed_tasks t ON t.current_attempt_id = h.id AND t.task_id = h.task_id "
        f"WHERE t.status NOT IN ({_placeholders(len(_TERMINAL))}) "
        f"AND h.status IN ({_placeholders(len(_OPEN_ATTEMPT))}) ORDER BY h.id",
        [*_TERMINAL, *_OPEN_ATTEMPT],
    )
    attempts = _readable(ATTEMPTS, cursor.fetchall(), unreadable)
    # A speculative pair (coordinator/speculation.py) has two open attempts; only the
    # task's current one resumes, and recovery closes the other (always the copy).
    current = {a.attempt_id for a in attempts}
    cursor.execute(
        f"SELECT {ATTEMPTS.select_list('h')} FROM task_execution_history h "
        f"WHERE h.speculative AND h.status IN ({_placeholders(len(_OPEN_ATTEMPT))}) "
        "ORDER BY h.id",
        _OPEN_ATTEMPT,
    )
    stale = [
        a for a in _readable(ATTEMPTS, cursor.fetchall(), unreadable) if a.attempt_id not in current
    ]
    cursor.execute(f"SELECT {WORKERS.select_list()} FROM worker_nodes ORDER BY worker_id")
    workers = _readable(WORKERS, cursor.fetchall(), unreadable)
    cursor.execute(
        "SELECT greatest((SELECT coalesce(max(id), 0) FROM task_execution_history), "
        "(SELECT coalesce(max(attempt_id), 0) FROM task_results))"
    )
    row = cursor.fetchone()
    assert row is not None  # a scalar select always returns one row
    open_test_tasks = [t.task_id for t in tasks if t.spec.type is TaskType.TEST]
    return RecoveredState(
        open_tasks=tasks,
        open_attempts=attempts,
        stale_attempts=stale,
        workers=workers,
        next_attempt_id=int(row[0]) + 1,
        reported_tests=pytest_queries.reported_tests(cursor, open_test_tasks),
        next_test_seq=pytest_queries.next_test_seq(cursor),
        unreadable_rows=unreadable,
    )


def _readable(
    mapping: TableMapping[R], rows: list[tuple[Any, ...]], unreadable: list[str]
) -> list[R]:
    """The rows that decode into records; each one that does not is described in
    ``unreadable`` and left out (one bad row must not keep a coordinator down).

    A task left out stays in the file as it was: its id is still known (so it
    is never reused) but nothing runs it. A worker left out is written afresh
    when it next connects.
    """
    records: list[R] = []
    for row in rows:
        try:
            records.append(mapping.from_row(row))
        except StoreError as error:
            unreadable.append(str(error))
    return records


def all_task_ids(cursor: duckdb.DuckDBPyConnection) -> set[str]:
    """Every stored task id: the coordinator keeps them in memory at start-up so a
    duplicate submission is refused without a query, even for finished tasks."""
    return {row[0] for row in cursor.execute("SELECT task_id FROM distributed_tasks").fetchall()}


def existing_task_ids(cursor: duckdb.DuckDBPyConnection, task_ids: Collection[str]) -> set[str]:
    """Which of ``task_ids`` are stored (the API refuses a duplicate submission).

    The ids go in as an Arrow table and are semi-joined, so a bulk submission
    of many thousands of tasks costs one query, not one per id.
    """
    if not task_ids:
        return set()
    wanted = pa.table({"task_id": pa.array(list(task_ids), type=pa.string())})
    cursor.register("wanted_task_ids", wanted)
    try:
        cursor.execute(
            "SELECT task_id FROM distributed_tasks "
            "WHERE task_id IN (SELECT task_id FROM wanted_task_ids)"
        )
        return {row[0] for row in cursor.fetchall()}
    finally:
        cursor.unregister("wanted_task_ids")


def _task_filter(
    statuses: Collection[TaskStatus | ShownStatus] | None,
    task_type: TaskType | None,
    worker_id: str | None,
) -> tuple[str, list[Any]] | None:
    """A WHERE clause and its parameters; ``None`` when nothing can match (no statuses).

    ``unschedulable`` is a queued task with a reason (what the CLI shows as its status).
    """
    clauses: list[str] = []
    params: list[Any] = []
    if statuses is not None:
        wanted = {ShownStatus(s) for s in statuses}
        values = sorted(TaskStatus(s).value for s in wanted - {ShownStatus.UNSCHEDULABLE})
        either = [f"status IN ({_placeholders(len(values))})"] if values else []
        params.extend(values)
        if ShownStatus.UNSCHEDULABLE in wanted:
            either.append("(status = ? AND unschedulable_reason IS NOT NULL)")
            params.append(TaskStatus.QUEUED.value)
        if not either:
            return None
        clauses.append(f"({' OR '.join(either)})")
    if task_type is not None:
        clauses.append("type = ?")
        params.append(TaskType(task_type).value)
    if worker_id is not None:
        clauses.append("worker_id = ?")
        params.append(worker_id)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, params


def list_tasks(
    cursor: duckdb.DuckDBPyConnection,
    *,
    statuses: Collection[TaskStatus | ShownStatus] | None,
    task_type: TaskType | None,
    worker_id: str | None,
    limit: int,
    offset: int,
    newest_first: bool = False,
) -> list[TaskRecord]:
    """One page of tasks, oldest first (``create_time``, then ``task_id`` for ties);
    ``newest_first`` reverses both (the dashboard shows the latest tasks: with
    100,000 stored, the oldest 200 are not what anyone looks for). Either way
    DuckDB keeps only the top ``limit + offset`` rows while it scans.

    ``statuses=None`` means any status; an empty collection matches nothing.
    ``worker_id`` is the worker of the task's latest attempt.
    """
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")
    query = _task_filter(statuses, task_type, worker_id)
    if query is None or limit == 0:
        return []
    where, params = query
    order = "create_time DESC, task_id DESC" if newest_first else "create_time, task_id"
    cursor.execute(
        f"SELECT {TASKS.select_list()} FROM distributed_tasks {where} "
        f"ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [TASKS.from_row(row) for row in cursor.fetchall()]


def count_tasks(
    cursor: duckdb.DuckDBPyConnection,
    *,
    statuses: Collection[TaskStatus | ShownStatus] | None,
    task_type: TaskType | None,
    worker_id: str | None,
) -> int:
    """How many tasks :func:`list_tasks` would page through with the same filters."""
    query = _task_filter(statuses, task_type, worker_id)
    if query is None:
        return 0
    where, params = query
    cursor.execute(f"SELECT count(*) FROM distributed_tasks {where}", params)
    row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def get_task(cursor: duckdb.DuckDBPyConnection, task_id: str) -> TaskRecord | None:
    cursor.execute(
        f"SELECT {TASKS.select_list()} FROM distributed_tasks WHERE task_id = ?", [task_id]
    )
    row = cursor.fetchone()
    return None if row is None else TASKS.from_row(row)


def get_attempts(cursor: duckdb.DuckDBPyConnection, task_id: str) -> list[AttemptRecord]:
    """Every attempt of a task, in the order they were made."""
    cursor.execute(
        f"SELECT {ATTEMPTS.select_list()} FROM task_execution_history "
        "WHERE task_id = ? ORDER BY attempt, id",
        [task_id],
    )
    return [ATTEMPTS.from_row(row) for row in cursor.fetchall()]


def get_results(cursor: duckdb.DuckDBPyConnection, task_id: str) -> list[ResultRecord]:
    """Every result received for a task, counted or not, in attempt order."""
    cursor.execute(
        f"SELECT {RESULTS.select_list()} FROM task_results WHERE task_id = ? ORDER BY attempt_id",
        [task_id],
    )
    return [RESULTS.from_row(row) for row in cursor.fetchall()]


def get_counted_result(cursor: duckdb.DuckDBPyConnection, task_id: str) -> ResultRecord | None:
    """The result that is the task's outcome (at most one is counted; latest wins if not)."""
    cursor.execute(
        f"SELECT {RESULTS.select_list()} FROM task_results "
        "WHERE task_id = ? AND counted ORDER BY attempt_id DESC LIMIT 1",
        [task_id],
    )
    row = cursor.fetchone()
    return None if row is None else RESULTS.from_row(row)


def list_workers(cursor: duckdb.DuckDBPyConnection) -> list[WorkerRecord]:
    cursor.execute(f"SELECT {WORKERS.select_list()} FROM worker_nodes ORDER BY worker_id")
    return [WORKERS.from_row(row) for row in cursor.fetchall()]


def status_counts(cursor: duckdb.DuckDBPyConnection) -> dict[TaskStatus, int]:
    """Tasks per status, with every status present (0 where there are none)."""
    counts = dict.fromkeys(TaskStatus, 0)
    cursor.execute("SELECT status, count(*) FROM distributed_tasks GROUP BY status")
    for status, count in cursor.fetchall():
        try:
            counts[TaskStatus(status)] = int(count)
        except ValueError as error:
            raise StoreError(f"distributed_tasks holds an unknown status {status!r}") from error
    return counts


def attempt_count(cursor: duckdb.DuckDBPyConnection) -> int:
    cursor.execute("SELECT count(*) FROM task_execution_history")
    row = cursor.fetchone()
    assert row is not None
    return int(row[0])
