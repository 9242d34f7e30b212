"""Analysis of benchmark results: comparisons across hardware and trends over time.

Callers: ``Store``'s ``benchmark_*`` methods, each with a fresh cursor (so the
coordinator's API handler threads run these while the writer commits). The
work is SQL inside DuckDB over ``benchmark_results`` (one row per batch size
of each counted benchmark result): window functions pick the latest run of a
group, count runs, and find the previous run a figure changed from. Rows come
back as plain dicts named after the table's columns, times as float epoch
seconds; the API renders them as JSON.

A *group* is one configuration measured repeatedly: (variant, backend,
hardware, device_name, precision, batch_size, is_simulated); ``backend``
(issue 15) keeps torch's and ONNX Runtime's runs of the same device apart.
``is_simulated`` is part of it so a simulated figure is never counted,
compared or shown as a run of real hardware (design invariant 6).
"""

from __future__ import annotations

from typing import Any

import duckdb

from testfleet.domain.benchmark import BenchmarkRow
from testfleet.store.rows import BENCHMARKS, from_micros, to_micros

_GROUP = "variant, backend, hardware, device_name, precision, batch_size, is_simulated"
#: Runs recorded at the same instant are told apart by attempt id (deterministic).
_OLDEST_FIRST = "recorded_time, attempt_id"
_NEWEST_FIRST = "recorded_time DESC, attempt_id DESC"

#: The figures of one run at one batch size, as selected (and returned) by both queries.
_FIGURES = (
    "variant",
    "hardware",
    "device_name",
    "precision",
    "batch_size",
    "is_simulated",
    "recorded_time",
    "task_id",
    "worker_id",
    "attempt_id",
    "throughput_items_per_second",
    "latency_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "memory_mb",
    "error_class",
    "error_message",
    "torch_version",
    "transformers_version",
    "load_note",
    "backend",
    "output_check",
    "output_max_abs_diff",
)


def _select_figures(alias: str) -> str:
    return ", ".join(
        f"epoch_us({alias}.{name}) AS {name}" if name == "recorded_time" else f"{alias}.{name}"
        for name in _FIGURES
    )


def _filters(
    model: str,
    *,
    precision: str | None = None,
    hardware: str | None = None,
    batch_size: int | None = None,
    since: float | None = None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (model always) and its parameters."""
    clauses = ["model = ?"]
    params: list[Any] = [model]
    for column, value in (
        ("precision", precision),
        ("hardware", hardware),
        ("batch_size", batch_size),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        # TIMESTAMP from integer microseconds: no time zone can creep in (rows.py).
        clauses.append("recorded_time >= make_timestamp(?::BIGINT)")
        params.append(to_micros(since))
    return "WHERE " + " AND ".join(clauses), params


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [column[0] for column in cursor.description]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        row["recorded_time"] = from_micros(row["recorded_time"])
    return rows


def benchmark_compare(
    cursor: duckdb.DuckDBPyConnection,
    model: str,
    *,
    precision: str | None = None,
    hardware: str | None = None,
    since: float | None = None,
) -> list[dict[str, Any]]:
    """The latest run of each group of ``model``, with how many runs the group has.

    One dict per (hardware, device_name, precision, batch_size, is_simulated):
    the latest run's figures (by ``recorded_time``, then attempt id) plus
    ``runs`` (every run of the group, within the filters) and ``failed_runs``
    (those that recorded an error at this batch size). A latest run that failed
    (``out_of_memory`` at a large batch size, say) is included with its
    ``error_class`` and ``error_message`` and no figures, so it shows where a
    device ran out. ``since`` (epoch seconds) keeps runs recorded at or after
    it. Ordered by batch_size, hardware, device_name, precision, then real
    before simulated. An unknown model gives ``[]``.
    """
    where, params = _filters(model, precision=precision, hardware=hardware, since=since)
    cursor.execute(
        f"""
        WITH ranked AS (
            SELECT *,
                row_number() OVER (PARTITION BY {_GROUP} ORDER BY {_NEWEST_FIRST}) AS newest,
                count(*) OVER (PARTITION BY {_GROUP}) AS runs,
                count(error_class) OVER (PARTITION BY {_GROUP}) AS failed_runs
            FROM benchmark_results {where}
        )
        SELECT {_select_figures("r")}, r.runs, r.failed_runs
        FROM ranked r
        WHERE r.newest = 1
        ORDER BY r.batch_size, r.variant, r.backend, r.hardware, r.device_name, r.precision,
            r.is_simulated
        """,
        params,
    )
    return _dicts(cursor)


def benchmark_latest_per_batch(
    cursor: duckdb.DuckDBPyConnection, *, models: int = 50
) -> list[dict[str, Any]]:
    """:func:`benchmark_compare` for the first ``models`` models (by name) at once,
    each dict with its ``model``: the latest run of every group of each.

    One query instead of one per model: the dashboard's batch-size curves read
    every model's latest runs on each page load. Ordered by model, then as
    :func:`benchmark_compare` orders.
    """
    if models < 1:
        raise ValueError(f"models must be >= 1, got {models}")
    cursor.execute(
        f"""
        WITH chosen AS (
            SELECT DISTINCT model FROM benchmark_results ORDER BY model LIMIT ?
        ),
        ranked AS (
            SELECT *,
                row_number() OVER (
                    PARTITION BY model, {_GROUP} ORDER BY {_NEWEST_FIRST}
                ) AS newest,
                count(*) OVER (PARTITION BY model, {_GROUP}) AS runs,
                count(error_class) OVER (PARTITION BY model, {_GROUP}) AS failed_runs
            FROM benchmark_results WHERE model IN (SELECT model FROM chosen)
        )
        SELECT r.model, {_select_figures("r")}, r.runs, r.failed_runs
        FROM ranked r
        WHERE r.newest = 1
        ORDER BY r.model, r.batch_size, r.variant, r.backend, r.hardware, r.device_name,
            r.precision, r.is_simulated
        """,
        [models],
    )
    return _dicts(cursor)


def benchmark_history(
    cursor: duckdb.DuckDBPyConnection,
    model: str,
    *,
    batch_size: int | None = None,
    precision: str | None = None,
    hardware: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Every recorded run of ``model`` (one dict per run and batch size), oldest first.

    Besides the run's figures, ``throughput_change_percent`` and
    ``latency_change_percent`` compare it with the previous measured run of
    the same group (a run that failed at this batch size is skipped; ``None``
    for a group's first run, or a failed run). The change is computed over all
    of the group's runs, so it is right even for the first row shown when
    ``limit`` cuts older runs off: ``limit`` keeps the most recent runs.
    Ordered by ``recorded_time``, attempt id, then batch size.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if limit == 0:
        return []
    where, params = _filters(model, precision=precision, hardware=hardware, batch_size=batch_size)
    window = f"OVER (PARTITION BY {_GROUP} ORDER BY {_OLDEST_FIRST})"
    cursor.execute(
        f"""
        WITH runs AS (
            SELECT *,
                lag(throughput_items_per_second IGNORE NULLS) {window} AS previous_throughput,
                lag(latency_ms IGNORE NULLS) {window} AS previous_latency
            FROM benchmark_results {where}
        ),
        recent AS (
            SELECT * FROM runs
            ORDER BY recorded_time DESC, attempt_id DESC, batch_size DESC
            LIMIT ?
        )
        SELECT {_select_figures("r")},
            CASE WHEN r.previous_throughput > 0 THEN
                round(100 * (r.throughput_items_per_second - r.previous_throughput)
                    / r.previous_throughput, 3)
            END AS throughput_change_percent,
            CASE WHEN r.previous_latency > 0 THEN
                round(100 * (r.latency_ms - r.previous_latency) / r.previous_latency, 3)
            END AS latency_change_percent
        FROM recent r
        ORDER BY r.recorded_time, r.attempt_id, r.batch_size
        """,
        [*params, limit],
    )
    return _dicts(cursor)


def benchmark_models(cursor: duckdb.DuckDBPyConnection) -> list[str]:
    """Every model with at least one benchmark row, sorted by name."""
    cursor.execute("SELECT DISTINCT model FROM benchmark_results ORDER BY model")
    return [row[0] for row in cursor.fetchall()]


def benchmark_rows(cursor: duckdb.DuckDBPyConnection, task_id: str) -> list[BenchmarkRow]:
    """The stored rows of one task's counted benchmark result, as written."""
    cursor.execute(
        f"SELECT {BENCHMARKS.select_list()} FROM benchmark_results "
        "WHERE task_id = ? ORDER BY attempt_id, batch_size",
        [task_id],
    )
    return [BENCHMARKS.from_row(row) for row in cursor.fetchall()]
