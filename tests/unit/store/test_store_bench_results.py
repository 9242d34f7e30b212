"""Benchmark rows: written with their result, read back, compared and followed over time.

Runs on a real DuckDB (``:memory:`` and a file). Rows are built directly as
``BenchmarkRow`` s (the contract the coordinator fills from a result's
``results`` document), with one helper that gives every field a value.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from store_builders import T0, attempt, result, task, worker

from testfleet.domain.benchmark import BenchmarkRow, benchmark_rows
from testfleet.domain.enums import AttemptStatus, TaskStatus
from testfleet.domain.records import WriteBatch
from testfleet.store import Store, StoreError

MODEL = "bert-base-uncased"
H200 = ("cuda", "NVIDIA H200")
XEON = ("cpu", "Intel Xeon Platinum 8480+")


def bench(
    attempt_id: int,
    batch_size: int,
    *,
    at: float = T0,
    device: tuple[str, str] = H200,
    throughput: float | None = 100.0,
    latency: float | None = 10.0,
    error_class: str | None = None,
    **changes: Any,
) -> BenchmarkRow:
    """A measured row (or, with ``error_class``, a failed one without figures)."""
    failed = error_class is not None
    row = BenchmarkRow(
        attempt_id=attempt_id,
        batch_size=batch_size,
        task_id=f"bench-{attempt_id}",
        worker_id="w1",
        recorded_time=at,
        model=MODEL,
        variant="seq=128",
        hardware=device[0],
        device_name=device[1],
        precision="fp16",
        is_simulated=False,
        latency_ms=None if failed else latency,
        latency_p50_ms=None if failed else latency,
        latency_p90_ms=None if failed or latency is None else latency * 1.1,
        latency_p99_ms=None if failed or latency is None else latency * 1.5,
        throughput_items_per_second=None if failed else throughput,
        memory_mb=None if failed else 2048.5,
        error_class=error_class,
        error_message="CUDA out of memory. Tried to allocate 2.00 GiB" if failed else None,
        torch_version="2.5.1",
        transformers_version="4.46.0",
        load_note=None,
    )
    return replace(row, **changes)


def run_batch(attempt_id: int, rows: list[BenchmarkRow]) -> WriteBatch:
    """What a coordinator turn writes when a benchmark result is counted."""
    task_id = rows[0].task_id
    return WriteBatch(
        tasks=[task(task_id, TaskStatus.COMPLETED)],
        attempts=[attempt(attempt_id, task_id, status=AttemptStatus.COMPLETED)],
        results=[result(attempt_id, task_id)],
        benchmark_rows=rows,
    )


@pytest.fixture
def store(any_store: Store) -> Iterator[Store]:
    with any_store as opened:
        opened.write(WriteBatch(workers=[worker("w1"), worker("w2")]))
        yield opened


def write_rows(store: Store, *rows: BenchmarkRow) -> None:
    """Write rows grouped by attempt, each group in its own batch."""
    by_attempt: dict[int, list[BenchmarkRow]] = {}
    for row in rows:
        by_attempt.setdefault(row.attempt_id, []).append(row)
    for attempt_id, group in by_attempt.items():
        store.write(run_batch(attempt_id, group))


def pick(rows: list[dict[str, Any]], *names: str) -> list[tuple[Any, ...]]:
    return [tuple(row[name] for name in names) for row in rows]


# ---------------------------------------------------------------- writing


def test_rows_are_written_with_their_result_and_read_back_equal(store: Store) -> None:
    rows = [bench(1, 1, at=T0 + 0.123456), bench(1, 8), bench(1, 64, error_class="out_of_memory")]
    store.write(run_batch(1, rows))

    assert store.get_benchmark_rows("bench-1") == rows
    assert store.get_results("bench-1")[0].attempt_id == 1


def test_rows_built_from_a_results_document_round_trip(store: Store) -> None:
    document = {
        "kind": "model_benchmark",
        "model": MODEL,
        "model_source": "config",
        "hardware": "cuda",
        "device": "cuda:0",
        "device_name": "NVIDIA H200",
        "precision": "bf16",
        "auto_batch_size": False,
        "batch_sizes": {
            "1": {
                "latency_ms": 4.5,
                "latency_p50_ms": 4.4,
                "latency_p90_ms": 5.0,
                "latency_p99_ms": 6.25,
                "throughput_items_per_second": 222.2,
                "memory_mb": 1500.0,
                "iterations": 20,
            }
        },
        "errors": {"512": {"error_class": "out_of_memory", "message": "CUDA out of memory"}},
        "conditions": {"torch_version": "2.5.1"},
    }
    rows = benchmark_rows(
        attempt_id=7,
        task_id="bench-7",
        worker_id="w1",
        recorded_time=T0 + 5,
        results=document,
        is_simulated=False,
    )
    store.write(run_batch(7, rows))

    assert store.get_benchmark_rows("bench-7") == rows
    assert [(r.batch_size, r.error_class) for r in rows] == [(1, None), (512, "out_of_memory")]


def test_a_resent_row_never_overwrites_the_first(store: Store) -> None:
    first = bench(1, 8, throughput=100.0)
    store.write(run_batch(1, [first]))
    store.write(run_batch(1, [replace(first, throughput_items_per_second=999.0)]))

    assert store.get_benchmark_rows("bench-1") == [first]


def test_within_a_batch_the_first_row_per_attempt_and_batch_size_stands(store: Store) -> None:
    first = bench(1, 8, throughput=100.0)
    store.write(run_batch(1, [first, replace(first, throughput_items_per_second=5.0)]))

    assert store.get_benchmark_rows("bench-1") == [first]


def test_rows_are_all_or_nothing_with_the_rest_of_the_batch(store: Store) -> None:
    batch = run_batch(1, [bench(1, 1)])
    # An attempt of a task nobody wrote: the foreign key fails the whole batch.
    batch.attempts.append(attempt(2, "no-such-task"))

    with pytest.raises(StoreError, match="benchmark rows"):
        store.write(batch)

    assert store.get_benchmark_rows("bench-1") == []
    assert store.benchmark_models() == []


def test_rows_survive_reopening_a_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.duckdb"
    rows = [bench(1, 1), bench(1, 2)]
    with Store(path) as first:
        first.write(WriteBatch(workers=[worker("w1")]))
        first.write(run_batch(1, rows))
    with Store(path) as reopened:
        assert reopened.get_benchmark_rows("bench-1") == rows
        assert reopened.benchmark_models() == [MODEL]


# ---------------------------------------------------------------- compare


def test_compare_picks_the_latest_run_per_group_and_counts_runs(store: Store) -> None:
    write_rows(
        store,
        bench(1, 1, at=T0, throughput=100.0),
        bench(1, 8, at=T0, throughput=700.0),
        bench(2, 1, at=T0 + 60, throughput=110.0),
        bench(3, 1, at=T0 + 120, throughput=120.0, latency=8.0),
        bench(4, 1, at=T0 + 30, device=XEON, throughput=20.0),
    )

    rows = store.benchmark_compare(MODEL)

    assert pick(rows, "batch_size", "hardware", "throughput_items_per_second", "runs") == [
        (1, "cpu", 20.0, 1),
        (1, "cuda", 120.0, 3),
        (8, "cuda", 700.0, 1),
    ]
    latest = rows[1]
    assert latest["attempt_id"] == 3
    assert latest["task_id"] == "bench-3"
    assert latest["recorded_time"] == T0 + 120
    assert latest["latency_ms"] == 8.0
    assert latest["latency_p99_ms"] == 12.0
    assert latest["device_name"] == "NVIDIA H200"
    assert latest["failed_runs"] == 0


def test_compare_breaks_a_tie_in_time_by_attempt_id(store: Store) -> None:
    write_rows(store, bench(5, 1, at=T0, throughput=1.0), bench(4, 1, at=T0, throughput=2.0))

    [row] = store.benchmark_compare(MODEL)

    assert (row["attempt_id"], row["runs"]) == (5, 2)


def test_compare_shows_where_a_device_ran_out_of_memory(store: Store) -> None:
    write_rows(
        store,
        bench(1, 64, at=T0, throughput=5000.0),
        bench(1, 512, at=T0, error_class="out_of_memory"),
        bench(2, 512, at=T0 + 10, device=XEON, throughput=40.0),
    )

    rows = store.benchmark_compare(MODEL)

    assert pick(rows, "batch_size", "hardware", "error_class", "throughput_items_per_second") == [
        (64, "cuda", None, 5000.0),
        (512, "cpu", None, 40.0),
        (512, "cuda", "out_of_memory", None),
    ]
    oom = rows[2]
    assert oom["failed_runs"] == 1
    assert oom["latency_ms"] is None
    assert "out of memory" in oom["error_message"]


def test_compare_reports_the_latest_run_even_when_it_failed(store: Store) -> None:
    write_rows(
        store,
        bench(1, 256, at=T0, throughput=900.0),
        bench(2, 256, at=T0 + 1, error_class="out_of_memory"),
    )

    [row] = store.benchmark_compare(MODEL)

    assert (row["error_class"], row["runs"], row["failed_runs"]) == ("out_of_memory", 2, 1)


def test_compare_orders_by_batch_size_hardware_device_precision(store: Store) -> None:
    write_rows(
        store,
        bench(1, 8, device=("cuda", "NVIDIA H200")),
        bench(2, 8, device=("cuda", "NVIDIA A100")),
        bench(3, 1, device=("rocm", "AMD MI300X")),
        bench(4, 1, device=("cuda", "NVIDIA H200"), precision="bf16"),
        bench(5, 1, device=("cuda", "NVIDIA H200")),
        bench(6, 8, device=("cpu", "Xeon")),
    )

    rows = store.benchmark_compare(MODEL)

    assert pick(rows, "batch_size", "hardware", "device_name", "precision") == [
        (1, "cuda", "NVIDIA H200", "bf16"),
        (1, "cuda", "NVIDIA H200", "fp16"),
        (1, "rocm", "AMD MI300X", "fp16"),
        (8, "cpu", "Xeon", "fp16"),
        (8, "cuda", "NVIDIA A100", "fp16"),
        (8, "cuda", "NVIDIA H200", "fp16"),
    ]


def test_compare_filters_by_precision_hardware_and_time(store: Store) -> None:
    write_rows(
        store,
        bench(1, 1, at=T0, precision="fp32"),
        bench(2, 1, at=T0 + 100, precision="fp16"),
        bench(3, 1, at=T0 + 200, device=XEON, precision="fp32"),
    )

    def attempts(**filters: Any) -> list[int]:
        return [row["attempt_id"] for row in store.benchmark_compare(MODEL, **filters)]

    assert attempts(precision="fp32") == [3, 1]
    assert attempts(hardware="cuda") == [2, 1]
    assert attempts(hardware="cuda", precision="fp16") == [2]
    assert attempts(since=T0 + 100) == [3, 2]
    assert attempts(since=T0 + 100.000001) == [3]
    assert attempts(hardware="rocm") == []


def test_compare_counts_runs_within_the_time_filter_only(store: Store) -> None:
    write_rows(store, bench(1, 1, at=T0), bench(2, 1, at=T0 + 10), bench(3, 1, at=T0 + 20))

    [row] = store.benchmark_compare(MODEL, since=T0 + 10)

    assert (row["attempt_id"], row["runs"]) == (3, 2)


def test_simulated_runs_are_never_counted_as_real_ones(store: Store) -> None:
    write_rows(
        store,
        bench(1, 1, at=T0, throughput=100.0),
        bench(2, 1, at=T0 + 10, throughput=1e6, is_simulated=True),
    )

    rows = store.benchmark_compare(MODEL)

    assert pick(rows, "is_simulated", "throughput_items_per_second", "runs") == [
        (False, 100.0, 1),
        (True, 1e6, 1),
    ]


def test_an_unknown_model_compares_to_nothing(store: Store) -> None:
    write_rows(store, bench(1, 1))

    assert store.benchmark_compare("gpt2") == []
    assert store.benchmark_history("gpt2") == []


# ---------------------------------------------------------------- history


def test_history_lists_every_run_oldest_first_with_its_figures(store: Store) -> None:
    write_rows(
        store,
        bench(2, 1, at=T0 + 60, throughput=110.0),
        bench(1, 8, at=T0, throughput=700.0),
        bench(1, 1, at=T0, throughput=100.0),
        bench(3, 1, at=T0 + 30, device=XEON, throughput=20.0, worker_id="w2"),
    )

    rows = store.benchmark_history(MODEL)

    assert pick(rows, "recorded_time", "attempt_id", "batch_size", "worker_id") == [
        (T0, 1, 1, "w1"),
        (T0, 1, 8, "w1"),
        (T0 + 30, 3, 1, "w2"),
        (T0 + 60, 2, 1, "w1"),
    ]
    first = rows[0]
    for name in (
        "task_id",
        "hardware",
        "device_name",
        "precision",
        "throughput_items_per_second",
        "latency_ms",
        "latency_p50_ms",
        "latency_p99_ms",
        "memory_mb",
        "torch_version",
    ):
        assert name in first, name
    assert first["memory_mb"] == 2048.5
    assert first["torch_version"] == "2.5.1"


def test_history_gives_the_change_from_the_previous_measured_run(store: Store) -> None:
    write_rows(
        store,
        bench(1, 1, at=T0, throughput=100.0, latency=10.0),
        bench(2, 1, at=T0 + 10, error_class="out_of_memory"),
        bench(3, 1, at=T0 + 20, throughput=125.0, latency=8.0),
        bench(4, 1, at=T0 + 30, device=XEON, throughput=10.0),
    )

    rows = store.benchmark_history(MODEL)

    assert pick(rows, "attempt_id", "throughput_change_percent", "latency_change_percent") == [
        (1, None, None),
        (2, None, None),
        (3, 25.0, -20.0),
        # Another device: a group of its own, so no previous run.
        (4, None, None),
    ]


def test_history_filters_and_keeps_the_most_recent_rows(store: Store) -> None:
    write_rows(
        store,
        bench(1, 1, at=T0, throughput=100.0),
        bench(1, 8, at=T0),
        bench(2, 1, at=T0 + 10, throughput=200.0, precision="fp32"),
        bench(3, 1, at=T0 + 20, throughput=150.0),
        bench(4, 1, at=T0 + 30, device=XEON),
    )

    def attempts(**filters: Any) -> list[tuple[int, int]]:
        return pick(store.benchmark_history(MODEL, **filters), "attempt_id", "batch_size")

    assert attempts(batch_size=8) == [(1, 8)]
    assert attempts(precision="fp32") == [(2, 1)]
    assert attempts(hardware="cpu") == [(4, 1)]
    assert attempts(hardware="cuda", batch_size=1) == [(1, 1), (2, 1), (3, 1)]
    assert attempts(limit=2) == [(3, 1), (4, 1)]
    # The change is measured against runs the limit cut off, too.
    [newest_cuda] = store.benchmark_history(MODEL, hardware="cuda", precision="fp16", limit=1)
    assert newest_cuda["throughput_change_percent"] == 50.0


def test_history_refuses_a_negative_limit(store: Store) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.benchmark_history(MODEL, limit=-1)
    assert store.benchmark_history(MODEL, limit=0) == []


# ---------------------------------------------------------------- models


def test_models_lists_each_benchmarked_model_once(store: Store) -> None:
    assert store.benchmark_models() == []
    write_rows(store, bench(1, 1, model="gpt2"), bench(1, 2, model="gpt2"), bench(2, 1))

    assert store.benchmark_models() == [MODEL, "gpt2"]


def test_runs_of_different_variants_are_never_compared_as_one(store: Store) -> None:
    full = bench(1, 8, at=T0, throughput=100.0)
    cut = bench(2, 8, at=T0 + 60, throughput=900.0, variant="num_hidden_layers=2 seq=64")
    write_rows(store, full, cut)
    compared = store.benchmark_compare(MODEL)
    assert pick(compared, "variant", "throughput_items_per_second", "runs") == [
        ("num_hidden_layers=2 seq=64", 900.0, 1),
        ("seq=128", 100.0, 1),
    ]
    history = store.benchmark_history(MODEL)
    # Each run is the first of its variant: no change is computed across them.
    assert [r["throughput_change_percent"] for r in history] == [None, None]


# ---------------------------------------------------------------- every model's latest runs


def test_latest_per_batch_is_compare_for_every_model_with_its_name(store: Store) -> None:
    write_rows(
        store,
        bench(1, 8, at=T0, throughput=100.0),
        bench(2, 8, at=T0 + 10, throughput=120.0),
        bench(2, 64, at=T0 + 10, error_class="out_of_memory"),
        bench(3, 8, at=T0 + 20, throughput=50.0, model="gpt2"),
    )
    rows = store.benchmark_latest_per_batch()
    assert pick(rows, "model", "batch_size", "throughput_items_per_second", "runs") == [
        (MODEL, 8, 120.0, 2),
        (MODEL, 64, None, 1),
        ("gpt2", 8, 50.0, 1),
    ]
    assert rows[1]["error_class"] == "out_of_memory"
    # The same rows benchmark_compare gives, model by model.
    by_model = [{**row, "model": MODEL} for row in store.benchmark_compare(MODEL)]
    assert rows[:2] == by_model


def test_latest_per_batch_reads_only_the_first_models_by_name(store: Store) -> None:
    write_rows(store, bench(1, 8, model="b"), bench(2, 8, model="a"), bench(3, 8, model="c"))
    assert [row["model"] for row in store.benchmark_latest_per_batch(models=2)] == ["a", "b"]
    with pytest.raises(ValueError, match="models must be >= 1"):
        store.benchmark_latest_per_batch(models=0)
    with Store(":memory:") as empty:
        assert empty.benchmark_latest_per_batch() == []


# ---------------------------------------------------------------- backends (issue 15)


def test_each_backend_of_a_device_is_a_group_of_its_own(store: Store) -> None:
    torch_run = bench(1, 8, at=T0, device=XEON, throughput=100.0)
    onnx = bench(
        2,
        8,
        at=T0 + 60,
        device=XEON,
        throughput=150.0,
        backend="onnxruntime",
        output_check="passed",
        output_max_abs_diff=2.5e-6,
    )
    openvino = bench(
        3,
        8,
        at=T0 + 120,
        device=XEON,
        throughput=170.0,
        backend="openvino",
        output_check="failed",
        output_max_abs_diff=0.25,
    )
    write_rows(store, torch_run, onnx, openvino)
    compared = store.benchmark_compare(MODEL)
    assert pick(
        compared, "backend", "throughput_items_per_second", "output_check", "output_max_abs_diff"
    ) == [
        ("onnxruntime", 150.0, "passed", 2.5e-6),
        ("openvino", 170.0, "failed", 0.25),
        ("torch", 100.0, None, None),
    ]
    assert [r["runs"] for r in compared] == [1, 1, 1]
    assert [r.backend for r in store.get_benchmark_rows("bench-2")] == ["onnxruntime"]
    history = store.benchmark_history(MODEL)
    # Each backend's first run: no change is computed across backends.
    assert [r["throughput_change_percent"] for r in history] == [None, None, None]


def test_regression_series_keep_backends_apart_and_torchs_labels_unchanged(store: Store) -> None:
    write_rows(
        store,
        bench(1, 8, device=XEON),
        bench(2, 8, at=T0 + 60, device=XEON, backend="onnxruntime", output_check="passed"),
    )
    labels = {
        dict(sample.series.labels).get("backend", "-")
        for sample in store.regression_samples()
        if sample.series.name == MODEL
    }
    assert labels == {"-", "onnxruntime"}
