"""Schema creation and migrations: fresh files, reopening, upgrades, newer files."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from store_builders import T0, attempt, task, worker, write_as_before_version_5

from testfleet.domain.enums import AttemptStatus, TaskStatus
from testfleet.domain.records import WriteBatch
from testfleet.store import Store, StoreError
from testfleet.store.rows import ATTEMPTS, RESULTS, TASKS, WORKERS
from testfleet.store.schema import LATEST_VERSION, MIGRATIONS, Migration, apply_migrations
from testfleet.store.writer import write_batch

#: The design document's tables and columns (docs/formats.md, tables), which must all exist.
DESIGN_COLUMNS = {
    "worker_nodes": [
        "worker_id",
        "hostname",
        "registration_time",
        "last_heartbeat",
        "status",
        "capabilities",
        "hardware_metrics",
        "tags",
    ],
    "distributed_tasks": [
        "task_id",
        "type",
        "priority",
        "status",
        "create_time",
        "start_time",
        "end_time",
        "worker_id",
        "attempts",
        "config",
        "requirements",
    ],
    "task_execution_history": [
        "id",
        "task_id",
        "worker_id",
        "attempt",
        "status",
        "start_time",
        "end_time",
        "execution_time_seconds",
        "error_message",
        "hardware_metrics",
    ],
}


def migration_rows(path: Path) -> list[tuple[object, ...]]:
    with duckdb.connect(str(path), read_only=True) as raw:
        return raw.execute(
            "SELECT version, applied_at FROM schema_migrations ORDER BY version"
        ).fetchall()


def column_types(connection: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    rows = connection.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
        [table],
    ).fetchall()
    return {name: data_type for name, data_type in rows}


def test_a_fresh_file_gets_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "fleet.duckdb"
    with Store(path) as store:
        assert store.schema_version == LATEST_VERSION
    assert [row[0] for row in migration_rows(path)] == [m.version for m in MIGRATIONS]


def test_reopening_does_not_apply_migrations_again(tmp_path: Path) -> None:
    path = tmp_path / "fleet.duckdb"
    Store(path).close()
    first = migration_rows(path)
    with Store(path) as store:
        assert store.schema_version == LATEST_VERSION
    assert migration_rows(path) == first


def test_an_older_file_gets_only_the_missing_migrations(tmp_path: Path) -> None:
    path = tmp_path / "fleet.duckdb"
    Store(path).close()
    upgrade = Migration(
        LATEST_VERSION + 1,
        "add a table",
        ("CREATE TABLE audit_log (logged_at TIMESTAMP, message VARCHAR)",),
    )
    with duckdb.connect(str(path)) as raw:
        # Re-running version 1 would fail: its tables already exist.
        assert apply_migrations(raw, [*MIGRATIONS, upgrade]) == LATEST_VERSION + 1
        assert raw.execute("SELECT count(*) FROM audit_log").fetchone() == (0,)
    assert [row[0] for row in migration_rows(path)] == [*range(1, LATEST_VERSION + 2)]


def test_a_file_from_a_newer_testfleet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fleet.duckdb"
    Store(path).close()
    future = LATEST_VERSION + 7
    with duckdb.connect(str(path)) as raw:
        raw.execute("INSERT INTO schema_migrations VALUES (?, current_timestamp)", [future])

    with pytest.raises(StoreError, match="newer testfleet") as raised:
        Store(path)

    message = str(raised.value)
    assert f"schema version {future}" in message
    assert f"up to {LATEST_VERSION}" in message
    assert str(path) in message
    # The refused open released the file: it can be opened again.
    duckdb.connect(str(path)).close()


def test_a_failing_migration_is_rolled_back_whole() -> None:
    broken = Migration(
        LATEST_VERSION + 1,
        "half-broken",
        ("CREATE TABLE half (x INTEGER)", "SELECT * FROM no_such_table"),
    )
    with duckdb.connect(":memory:") as raw:
        apply_migrations(raw)
        with pytest.raises(StoreError, match=f"version {LATEST_VERSION + 1} \\(half-broken\\)"):
            apply_migrations(raw, [*MIGRATIONS, broken])
        tables = {row[0] for row in raw.execute("SHOW TABLES").fetchall()}
        version = raw.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert "half" not in tables
    assert version == (LATEST_VERSION,)


def test_migrations_must_be_numbered_from_one_without_gaps() -> None:
    with duckdb.connect(":memory:") as raw, pytest.raises(ValueError, match="numbered"):
        apply_migrations(raw, [Migration(1, "a", ()), Migration(3, "b", ())])


def test_the_design_documents_tables_and_the_records_columns_exist() -> None:
    with duckdb.connect(":memory:") as raw:
        apply_migrations(raw)
        for table, columns in DESIGN_COLUMNS.items():
            assert set(columns) <= set(column_types(raw, table)), table
        for mapping in (TASKS, ATTEMPTS, RESULTS, WORKERS):
            types = column_types(raw, mapping.table)
            for column in mapping.columns:
                assert column.name in types, (mapping.table, column.name)
                if column.is_time:
                    assert types[column.name] == "TIMESTAMP", (mapping.table, column.name)
        history = column_types(raw, "task_execution_history")
    assert history["execution_time_seconds"] == "DOUBLE"
    assert history["hardware_metrics"] == "JSON"


def test_version_4_says_what_became_of_each_result_in_an_older_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_as_before_version_5(monkeypatch)
    # Before version 4 a retried first attempt's result read only as
    # counted = false, like a late one; the upgrade tells them apart.
    path = tmp_path / "fleet-v3.duckdb"
    with duckdb.connect(str(path)) as raw:
        assert apply_migrations(raw, MIGRATIONS[:3]) == 3
        write_batch(
            raw.cursor(),
            WriteBatch(
                workers=[worker("w1")],
                tasks=[
                    task("first-try", TaskStatus.COMPLETED),
                    task("retried", TaskStatus.COMPLETED),
                ],
                attempts=[
                    attempt(1, "first-try", status=AttemptStatus.COMPLETED, end_time=T0 + 5),
                    attempt(2, "retried", status=AttemptStatus.FAILED, end_time=T0 + 5),
                    attempt(3, "retried", status=AttemptStatus.LOST, end_time=T0 + 6),
                    attempt(4, "retried", status=AttemptStatus.COMPLETED, end_time=T0 + 9),
                ],
            ),
        )
        # The version-3 rows, as a build of that version wrote them.
        for attempt_id, task_id, counted, received in (
            (1, "first-try", True, T0 + 5),  # the outcome
            (2, "retried", False, T0 + 5),  # closed its attempt, then a retry
            (3, "retried", False, T0 + 8),  # after its attempt was declared lost
            (4, "retried", True, T0 + 9),
        ):
            raw.execute(
                "INSERT INTO task_results VALUES (?, ?, 'w1', 'completed', "
                "make_timestamp(?::BIGINT), ?, false, 1.0, '{}')",
                [attempt_id, task_id, int(received * 1_000_000), counted],
            )

    with duckdb.connect(str(path)) as raw:
        assert apply_migrations(raw) == LATEST_VERSION
        rows = raw.execute(
            "SELECT attempt_id, counted, disposition FROM task_results ORDER BY attempt_id"
        ).fetchall()
    assert rows == [
        (1, True, "outcome"),
        (2, False, "retried"),
        (3, False, "late"),
        (4, True, "outcome"),
    ]
