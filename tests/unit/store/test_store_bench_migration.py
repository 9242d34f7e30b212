"""Schema version 2: ``benchmark_results`` on a fresh file, and a version-1 file upgraded."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import duckdb
import pytest
from store_builders import T0, attempt, result, task, worker, write_as_before_version_5

from testfleet.domain.benchmark import BenchmarkRow
from testfleet.domain.enums import AttemptStatus, TaskStatus
from testfleet.domain.records import WriteBatch
from testfleet.store import Store
from testfleet.store.rows import BENCHMARKS
from testfleet.store.schema import LATEST_VERSION, MIGRATIONS, apply_migrations
from testfleet.store.writer import write_batch


def row(attempt_id: int, batch_size: int, task_id: str = "bench-1") -> BenchmarkRow:
    return BenchmarkRow(
        attempt_id=attempt_id,
        batch_size=batch_size,
        task_id=task_id,
        worker_id="w1",
        recorded_time=T0 + 3,
        model="gpt2",
        variant="seq=128",
        hardware="cpu",
        device_name="Intel Xeon",
        precision="fp32",
        is_simulated=False,
        latency_ms=12.5,
        latency_p50_ms=12.0,
        latency_p90_ms=14.0,
        latency_p99_ms=20.0,
        throughput_items_per_second=80.0,
        memory_mb=900.0,
        error_class=None,
        error_message=None,
        torch_version="2.5.1",
        transformers_version=None,
        load_note=None,
    )


def column_types(connection: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    rows = connection.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
        [table],
    ).fetchall()
    return {name: data_type for name, data_type in rows}


def test_version_2_is_the_benchmark_table() -> None:
    assert LATEST_VERSION >= 2
    assert MIGRATIONS[1].version == 2
    assert "benchmark_results" in " ".join(MIGRATIONS[1].statements)


def test_the_table_has_a_column_for_every_benchmark_row_field() -> None:
    with duckdb.connect(":memory:") as raw:
        apply_migrations(raw)
        types = column_types(raw, "benchmark_results")
        indexes = raw.execute(
            "SELECT index_name, expressions FROM duckdb_indexes() "
            "WHERE table_name = 'benchmark_results'"
        ).fetchall()
        constraints = raw.execute(
            "SELECT constraint_type, constraint_column_names FROM duckdb_constraints() "
            "WHERE table_name = 'benchmark_results' AND constraint_type <> 'NOT NULL'"
        ).fetchall()

    assert set(types) == {f.name for f in fields(BenchmarkRow)}
    assert [c.name for c in BENCHMARKS.columns] == [f.name for f in fields(BenchmarkRow)]
    assert types["recorded_time"] == "TIMESTAMP"
    assert types["is_simulated"] == "BOOLEAN"
    assert types["throughput_items_per_second"] == "DOUBLE"
    assert types["latency_p99_ms"] == "DOUBLE"
    assert types["batch_size"] == "INTEGER"
    assert ("benchmark_results_model", "[model]") in indexes
    # The composite primary key, and no foreign keys (see schema.py).
    assert ("PRIMARY KEY", ["attempt_id", "batch_size"]) in constraints
    assert not [c for c in constraints if c[0] == "FOREIGN KEY"]


def test_the_primary_key_is_attempt_and_batch_size() -> None:
    with duckdb.connect(":memory:") as raw:
        apply_migrations(raw)
        raw.execute(
            "INSERT INTO benchmark_results (attempt_id, batch_size, task_id, worker_id, "
            "recorded_time, model, variant, hardware, device_name, precision, is_simulated) "
            "VALUES (1, 8, 't', 'w', TIMESTAMP '2024-01-01', 'm', '', 'cpu', 'x', 'fp32', false)"
        )
        with pytest.raises(duckdb.ConstraintException):
            raw.execute(
                "INSERT INTO benchmark_results (attempt_id, batch_size, task_id, worker_id, "
                "recorded_time, model, variant, hardware, device_name, precision, is_simulated) "
                "VALUES (1, 8, 't', 'w', TIMESTAMP '2024-01-02', 'm', '', 'cpu', 'x', 'fp32', "
                "false)"
            )


def test_a_version_1_file_is_upgraded_and_keeps_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_as_before_version_5(monkeypatch)
    path = tmp_path / "fleet-v1.duckdb"
    # A file as testfleet wrote it before benchmark results: only migration 1.
    with duckdb.connect(str(path)) as raw:
        assert apply_migrations(raw, MIGRATIONS[:1]) == 1
        write_batch(
            raw.cursor(),
            WriteBatch(
                workers=[worker("w1")],
                tasks=[task("old", TaskStatus.COMPLETED)],
                attempts=[attempt(1, "old", status=AttemptStatus.COMPLETED)],
                results=[result(1, "old")],
            ),
        )
        tables = {name for (name,) in raw.execute("SHOW TABLES").fetchall()}
    assert "benchmark_results" not in tables

    with Store(path) as store:
        assert store.schema_version == LATEST_VERSION
        # What version 1 held is still there.
        old = store.get_task("old")
        assert old is not None
        assert old.status is TaskStatus.COMPLETED
        assert [r.attempt_id for r in store.get_results("old")] == [1]
        assert store.benchmark_models() == []
        # And benchmark rows go in beside it.
        rows = [row(2, 1), row(2, 4)]
        store.write(
            WriteBatch(
                tasks=[task("bench-1", TaskStatus.COMPLETED)],
                attempts=[attempt(2, "bench-1", status=AttemptStatus.COMPLETED)],
                results=[result(2, "bench-1")],
                benchmark_rows=rows,
            )
        )
        assert store.get_benchmark_rows("bench-1") == rows
        assert store.benchmark_models() == ["gpt2"]
        assert store.load_state().next_attempt_id == 3

    with duckdb.connect(str(path), read_only=True) as raw:
        versions = raw.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [v for (v,) in versions] == [m.version for m in MIGRATIONS]


def test_version_10_gives_rows_from_before_backends_torch(tmp_path: Path) -> None:
    path = tmp_path / "fleet-v9.duckdb"
    with duckdb.connect(str(path)) as raw:
        assert apply_migrations(raw, MIGRATIONS[:9]) == 9
        raw.execute(
            "INSERT INTO benchmark_results (attempt_id, batch_size, task_id, worker_id, "
            "recorded_time, model, variant, hardware, device_name, precision, is_simulated) "
            "VALUES (1, 8, 't', 'w', TIMESTAMP '2024-01-01', 'm', '', 'cpu', 'x', 'fp32', false)"
        )
    with Store(path) as store:
        assert store.schema_version == LATEST_VERSION >= 10
        [old] = store.get_benchmark_rows("t")
    assert (old.backend, old.output_check, old.output_max_abs_diff) == ("torch", None, None)
