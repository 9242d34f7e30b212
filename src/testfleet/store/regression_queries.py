"""The runs regression detection judges, read from ``benchmark_results`` and ``test_results``.

Callers: ``Store.regression_samples`` (on a fresh cursor, in a thread of the
API's), behind ``GET /api/v1/regressions``, the ``/metrics`` gauge of open
regressions and the alert rules. The judging is pure and lives in
:mod:`testfleet.analysis.regressions`; this module only turns rows into its
:class:`~testfleet.analysis.regressions.Sample` values.

Each series keeps its ``per_series`` most recent runs (a window function in
DuckDB), so the work stays bounded however long the history: enough for a
baseline, a regression and its recovery. Benchmarks: one series per model,
variant, hardware, device, precision, batch size and real-or-simulated
(a simulated run never joins a real one's baseline), for throughput and for
mean latency; a batch size that failed has no figures and is left out.
Tests: one series per project and node id, passed runs only (a failing
test's duration says nothing about its speed).
"""

from __future__ import annotations

import duckdb

from testfleet.analysis.regressions import Figure, Sample, SeriesKey, SeriesKind
from testfleet.domain.pytest_tasks import TestOutcome

#: Runs per series read by default: a window of 10, a regression and its recovery.
DEFAULT_PER_SERIES = 50

_BENCHMARK_GROUP = (
    "model, variant, hardware, device_name, precision, batch_size, is_simulated, backend"
)


def benchmark_samples(
    cursor: duckdb.DuckDBPyConnection, per_series: int = DEFAULT_PER_SERIES
) -> list[Sample]:
    """Throughput and latency samples of every benchmark series (newest ``per_series``)."""
    cursor.execute(
        f"""
        SELECT {_BENCHMARK_GROUP}, epoch_us(recorded_time), attempt_id,
            throughput_items_per_second, latency_ms
        FROM (
            SELECT *, row_number() OVER (
                PARTITION BY {_BENCHMARK_GROUP} ORDER BY recorded_time DESC, attempt_id DESC
            ) AS newest
            FROM benchmark_results WHERE error_class IS NULL
        )
        WHERE newest <= ?
        """,
        [per_series],
    )
    samples: list[Sample] = []
    for row in cursor.fetchall():
        model, variant, hardware, device, precision, batch, simulated, backend = row[:8]
        micros, attempt = row[8:10]
        labels: tuple[tuple[str, str], ...] = (
            ("variant", variant),
            ("hardware", hardware),
            ("device_name", device),
            ("precision", precision),
            ("batch_size", str(batch)),
            ("is_simulated", "true" if simulated else "false"),
        )
        if backend and backend != "torch":
            # Issue 15: each backend is a series of its own; torch's keys stay as
            # they were before backends existed, so their history carries on.
            labels += (("backend", backend),)
        when = micros / 1e6
        for figure, value in ((Figure.THROUGHPUT, row[10]), (Figure.LATENCY, row[11])):
            if value is not None:
                key = SeriesKey(SeriesKind.BENCHMARK, model, figure, labels)
                samples.append(Sample(key, when, float(value), attempt))
    return samples


def duration_samples(
    cursor: duckdb.DuckDBPyConnection, per_series: int = DEFAULT_PER_SERIES
) -> list[Sample]:
    """Duration samples of every test's passed runs (newest ``per_series`` per test)."""
    cursor.execute(
        """
        SELECT project, nodeid, epoch_us(recorded_time), attempt_id, duration_seconds
        FROM (
            SELECT *, row_number() OVER (
                PARTITION BY project, nodeid ORDER BY recorded_time DESC, seq DESC
            ) AS newest
            FROM test_results WHERE outcome = ? AND NOT crashed
        )
        WHERE newest <= ?
        """,
        [TestOutcome.PASSED.value, per_series],
    )
    return [
        Sample(
            SeriesKey(SeriesKind.TEST, nodeid, Figure.TEST_DURATION, (("project", project),)),
            micros / 1e6,
            float(duration),
            attempt,
        )
        for project, nodeid, micros, attempt, duration in cursor.fetchall()
    ]


def regression_samples(
    cursor: duckdb.DuckDBPyConnection, per_series: int = DEFAULT_PER_SERIES
) -> list[Sample]:
    """Every sample regression detection judges: benchmarks, then test durations."""
    return benchmark_samples(cursor, per_series) + duration_samples(cursor, per_series)
