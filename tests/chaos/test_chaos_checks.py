"""The chaos suite's invariants (chaos_checks.py) find what they look for: a
file with a lost task, a task never finished, a task counted twice, an open
attempt and a test reported twice, beside tasks that are fine."""

from __future__ import annotations

from pathlib import Path

import duckdb
from chaos_checks import read_store

#: Only the columns the checks read, with the store's names.
TABLES = (
    "CREATE TABLE distributed_tasks (task_id VARCHAR, status VARCHAR)",
    "CREATE TABLE task_results (task_id VARCHAR, disposition VARCHAR)",
    "CREATE TABLE task_execution_history (id INTEGER, task_id VARCHAR, status VARCHAR, "
    "worker_id VARCHAR, end_time TIMESTAMP)",
    "CREATE TABLE test_results (run_id VARCHAR, nodeid VARCHAR, outcome VARCHAR)",
)


def _file(tmp_path: Path) -> Path:
    db = tmp_path / "fleet.duckdb"
    with duckdb.connect(str(db)) as con:
        for statement in TABLES:
            con.execute(statement)
        con.execute(
            "INSERT INTO distributed_tasks VALUES ('ok', 'completed'), ('failed', 'failed'), "
            "('twice', 'completed'), ('stuck', 'running'), ('bare', 'completed')"
        )
        con.execute(
            "INSERT INTO task_results VALUES ('ok', 'outcome'), ('ok', 'late'), "
            "('failed', 'retried'), ('failed', 'outcome'), ('twice', 'outcome'), "
            "('twice', 'outcome')"
        )
        con.execute(
            "INSERT INTO task_execution_history VALUES "
            "(1, 'ok', 'completed', 'w0', now()), (2, 'stuck', 'running', 'w1', NULL)"
        )
        con.execute(
            "INSERT INTO test_results VALUES ('r1', 'a', 'passed'), ('r1', 'b', 'failed'), "
            "('r2', 'a', 'passed'), ('r2', 'a', 'passed')"
        )
    return db


def test_each_broken_invariant_is_named_and_healthy_tasks_pass(tmp_path: Path) -> None:
    found = read_store(_file(tmp_path), ["ok", "failed", "twice", "stuck", "bare", "gone"])
    assert found.accepted == 6
    assert found.finished == 4
    assert found.lost == ["gone"]
    assert found.unfinished == ["stuck (running)"]
    assert found.duplicates == ["twice (2 outcomes)"]
    assert found.no_outcome == ["bare (completed)"]
    assert found.late_results == 1
    assert found.open_attempts == ["stuck attempt 2 (running, worker w1)"]
    assert found.tests_twice == ["r2 a (2x)"]
    assert found.test_runs == {"r1": 2, "r2": 2}
    problems = "\n".join(found.problems())
    for words in ("(lost): gone", "(twice): twice", "left open", "more than once: r2 a"):
        assert words in problems


def test_a_clean_file_has_no_problems(tmp_path: Path) -> None:
    db = _file(tmp_path)
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM task_execution_history WHERE end_time IS NULL")
        con.execute("DELETE FROM test_results WHERE run_id = 'r2'")
    found = read_store(db, ["ok", "failed"])
    assert found.problems() == []
    assert found.finished == 2
