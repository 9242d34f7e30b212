"""The samples regression detection reads from a real DuckDB, and what it finds there."""

from __future__ import annotations

from dataclasses import replace

from store_builders import T0, worker
from test_store_bench_results import bench, run_batch
from test_store_test_results import chunk_task, row

from testfleet.analysis.regressions import Figure, SeriesKind, find_regressions
from testfleet.domain.pytest_tasks import TestOutcome
from testfleet.domain.records import WriteBatch
from testfleet.store import open_store


def test_benchmark_series_keep_their_newest_runs_and_skip_failed_ones(store_spec: str) -> None:
    with open_store(store_spec) as store:
        store.write(WriteBatch(workers=[worker("w1")]))
        for i in range(1, 13):
            items_per_second = 100.0 if i <= 10 else 80.0  # a 20 % drop in the last two runs
            rows = [
                bench(i, 8, at=T0 + i, throughput=items_per_second, latency=10.0),
                bench(i, 64, at=T0 + i, error_class="out_of_memory"),
            ]
            store.write(run_batch(i, rows))
        samples = store.regression_samples(per_series=11)
        figures = {(s.series.figure, s.series.labels) for s in samples}
        assert {figure for figure, _ in figures} == {Figure.THROUGHPUT, Figure.LATENCY}
        assert all(dict(labels)["batch_size"] == "8" for _, labels in figures)
        throughput = [s for s in samples if s.series.figure is Figure.THROUGHPUT]
        assert sorted(s.order for s in throughput) == list(range(2, 13))  # the newest 11
        (regression,) = find_regressions(samples)
        assert regression.series.name == "bert-base-uncased"
        assert regression.series.figure is Figure.THROUGHPUT
        assert regression.started == T0 + 11


def test_simulated_runs_are_their_own_series(store_spec: str) -> None:
    with open_store(store_spec) as store:
        store.write(WriteBatch(workers=[worker("w1")]))
        store.write(run_batch(1, [bench(1, 8)]))
        store.write(run_batch(2, [bench(2, 8, is_simulated=True)]))
        keys = {s.series for s in store.regression_samples() if s.series.figure is Figure.LATENCY}
        assert len(keys) == 2


def test_test_durations_come_from_passed_uncrashed_runs(store_spec: str) -> None:
    with open_store(store_spec) as store:
        task_id = "run1.r0.00000"
        rows = [
            replace(row(1, task_id, "t.py::a"), outcome=TestOutcome.PASSED, duration_seconds=1.5),
            row(2, "run1.r0.00001", "t.py::a"),  # failed
            replace(row(3, "run1.r0.00002", "t.py::a"), outcome=TestOutcome.PASSED, crashed=True),
        ]
        store.write(
            WriteBatch(workers=[worker("w1")], tasks=[chunk_task(task_id, "run1")], test_rows=rows)
        )
        (sample,) = store.regression_samples()
        assert sample.series.kind is SeriesKind.TEST
        assert sample.series.name == "t.py::a"
        assert sample.series.labels == (("project", "path:/srv/p"),)
        assert (sample.value, sample.time) == (1.5, T0 + 1)
