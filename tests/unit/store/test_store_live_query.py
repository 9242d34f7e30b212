"""Users' read-only SQL against a live store, and tables exported as Parquet.

Real DuckDB throughout: what is refused is decided by DuckDB's own parser and
settings, so only the real thing can show that it holds.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow.parquet as pq
import pytest
from store_builders import attempt, result, task, worker

from testfleet.domain.enums import AttemptStatus, TaskStatus
from testfleet.domain.records import WriteBatch
from testfleet.store import Store, open_store
from testfleet.store.live_query import ExportTable, QueryError, QueryProblem, check_read_only
from testfleet.store.postgres import PostgresStore


@pytest.fixture
def store(store_spec: str) -> Iterator[Store | PostgresStore]:
    """On a DuckDB file and on PostgreSQL: users' SQL is DuckDB's on both."""
    opened = open_store(store_spec)
    opened.write(
        WriteBatch(
            workers=[worker("w1")],
            tasks=[task(f"t{n}", TaskStatus.COMPLETED) for n in range(5)],
            attempts=[attempt(n + 1, f"t{n}", status=AttemptStatus.COMPLETED) for n in range(5)],
            results=[result(n + 1, f"t{n}") for n in range(5)],
        )
    )
    with opened:
        yield opened


def test_a_select_answers_columns_and_rows(store: Store) -> None:
    answer = store.query(
        "SELECT task_id, status, attempts + 1 AS n FROM distributed_tasks ORDER BY task_id LIMIT 2"
    )
    assert [(c.name, c.type) for c in answer.columns] == [
        ("task_id", "VARCHAR"),
        ("status", "VARCHAR"),
        ("n", "INTEGER"),
    ]
    assert answer.rows == [["t0", "completed", 1], ["t1", "completed", 1]]
    assert answer.truncated is False


def test_more_rows_than_asked_for_are_cut_and_said_so(store: Store) -> None:
    answer = store.query("FROM distributed_tasks ORDER BY task_id", max_rows=3)
    assert [row[0] for row in answer.rows] == ["t0", "t1", "t2"]
    assert answer.truncated is True
    assert store.query("FROM distributed_tasks", max_rows=5).truncated is False


def test_values_json_cannot_carry_come_back_as_json(store: Store) -> None:
    (row,) = store.query(
        "SELECT TIMESTAMP '2026-12-06 03:00:00', DATE '2026-12-06', 1.25::DECIMAL(5,2), "
        "'inf'::DOUBLE, 'nan'::DOUBLE, 170141183460469231731687303715884105727::HUGEINT, "
        "'\\x01\\x02'::BLOB, INTERVAL 90 SECOND, [1, 2], {'a': 1}, "
        "'6ba7b810-9dad-11d1-80b4-00c04fd430c8'::UUID"
    ).rows
    assert row == [
        "2026-12-06T03:00:00",
        "2026-12-06",
        "1.25",
        None,
        None,
        "170141183460469231731687303715884105727",
        "AQI=",
        90.0,
        [1, 2],
        {"a": 1},
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    ]


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("DELETE FROM distributed_tasks", "this is DELETE"),
        ("INSERT INTO worker_nodes SELECT * FROM worker_nodes", "this is INSERT"),
        ("UPDATE distributed_tasks SET status = 'queued'", "this is UPDATE"),
        ("DROP TABLE task_results", "this is DROP"),
        ("CREATE TEMP TABLE x AS SELECT 1", "this is CREATE"),
        ("COPY distributed_tasks TO '/tmp/out.csv'", "this is COPY"),
        ("ATTACH '/tmp/other.duckdb'", "this is ATTACH"),
        ("SET threads = 8", "this is SET"),
        ("EXPLAIN ANALYZE DELETE FROM distributed_tasks", "this is EXPLAIN"),
        ("SELECT 1; DROP TABLE task_results", "exactly one statement; this has 2"),
        ("", "exactly one statement; this has 0"),
        ("SELEC 1", "syntax error"),
    ],
)
def test_anything_but_one_select_is_refused_before_it_runs(
    store: Store, sql: str, words: str
) -> None:
    with pytest.raises(QueryError) as refused:
        store.query(sql)
    assert refused.value.problem is QueryProblem.INVALID
    assert words in refused.value.message
    # Nothing was changed.
    assert store.query("SELECT count(*) FROM distributed_tasks").rows == [[5]]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/hostname')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
    ],
)
def test_a_select_cannot_read_the_coordinators_files(store: Store, sql: str) -> None:
    with pytest.raises(QueryError) as refused:
        store.query(sql)
    assert refused.value.problem is QueryProblem.INVALID
    assert "disabled" in refused.value.message


def test_a_failing_query_says_what_duckdb_said_without_the_caret_drawing(store: Store) -> None:
    with pytest.raises(QueryError) as refused:
        store.query("SELECT * FROM distributed_task")
    message = refused.value.message
    assert "distributed_task does not exist" in message
    assert "distributed_tasks" in message  # DuckDB's "did you mean"
    assert "LINE 1" not in message


def test_a_query_past_its_time_limit_is_stopped(store: Store) -> None:
    # Far more work than any machine does in the limit: only the watchdog ends it.
    with pytest.raises(QueryError) as stopped:
        store.query(
            "SELECT count(*) FROM range(1000000000000) a, range(1000) b", timeout_seconds=0.2
        )
    assert stopped.value.problem is QueryProblem.TIMEOUT
    assert "longer than 0.2 s" in stopped.value.message
    # The store is fine afterwards.
    assert store.query("SELECT count(*) FROM task_results").rows == [[5]]


def test_read_only_statements_are_recognised_by_duckdbs_parser() -> None:
    for sql in (
        "SELECT 1",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "FROM distributed_tasks",
        "SHOW TABLES",
        "DESCRIBE task_results",
        "SUMMARIZE task_results",
    ):
        check_read_only(sql)


def test_every_table_exports_as_parquet(store: Store) -> None:
    for table in ExportTable:
        sink = io.BytesIO()
        rows = store.export_parquet(table, sink)
        exported = pq.read_table(io.BytesIO(sink.getvalue()))
        assert exported.num_rows == rows
        assert rows == store.query(f"SELECT count(*) FROM {table.value}").rows[0][0]
    sink = io.BytesIO()
    store.export_parquet(ExportTable.DISTRIBUTED_TASKS, sink)
    exported = pq.read_table(io.BytesIO(sink.getvalue()))
    assert sorted(exported.column("task_id").to_pylist()) == [f"t{n}" for n in range(5)]
    assert "create_time" in exported.column_names
