"""The coordinator's Prometheus metrics: counters move as a fleet runs tasks.

The fleet is the in-process one (the real loop and store, agents on memory
channels, an autojumping fake clock); the text is parsed with
prometheus-client's own parser, as Prometheus would read it.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from testfleet.coordinator.metrics import Histogram, Metrics
from testfleet.coordinator.state_view import SlotUse, StateView
from testfleet.domain.benchmark import BenchmarkRow
from testfleet.domain.pytest_tasks import (
    PhaseReport,
    ReportOutcome,
    TestLocation,
    TestOutcome,
    TestPhase,
    TestRecord,
    TestResultRow,
)
from testfleet.domain.records import WriteBatch
from testfleet.domain.task import TaskSpec
from testfleet.testing import FakeClock
from testfleet.testing.fleet import InProcessFleet, in_process_fleet

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics: Metrics) -> Samples:
    """Every sample of a scrape, keyed by name and sorted labels."""
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def watch(fleet: InProcessFleet) -> Metrics:
    metrics = Metrics(fleet.clock, StateView(fleet.loop.state), lambda: len(fleet.loop.connections))
    fleet.loop.observer = metrics
    return metrics


def simulated(task_id: str, seconds: float = 0.0, **changes: object) -> TaskSpec:
    config = {"duration_seconds": seconds} | dict(changes.pop("config", {}))  # type: ignore[call-overload]
    return TaskSpec.model_validate(
        {"task_id": task_id, "type": "simulated", "config": config, **changes}
    )


def done(fleet: InProcessFleet, task_ids: list[str]) -> bool:
    tasks = [fleet.store.get_task(task_id) for task_id in task_ids]
    return all(t is not None and t.status.is_terminal for t in tasks)


async def test_counters_move_as_tasks_run(tmp_path: Path) -> None:
    async with in_process_fleet(tmp_path / "m.duckdb") as fleet:
        metrics = watch(fleet)
        assert ("testfleet_attempts_total", ()) not in scrape(metrics)  # none yet
        worker = fleet.add_worker("w1", slots=2, seed=1)
        await fleet.wait_until(worker.agent.connected.is_set)
        ok = [f"ok{n}" for n in range(3)]
        await fleet.loop.submit([simulated(task_id, 5.0) for task_id in ok])
        await fleet.loop.submit(
            [simulated("bad", 1.0, config={"fail_probability": 1.0, "seed": 1})]
        )
        await fleet.wait_until(lambda: done(fleet, [*ok, "bad"]))
        after = scrape(metrics)

    completed = ("testfleet_attempts_total", (("error_class", "none"), ("outcome", "completed")))
    failed = ("testfleet_attempts_total", (("error_class", "task_failure"), ("outcome", "failed")))
    assert after[completed] == 3
    assert after[failed] == 1
    simulated_type = (("task_type", "simulated"),)
    assert after[("testfleet_queue_wait_seconds_count", simulated_type)] == 4
    assert after[("testfleet_attempt_duration_seconds_count", simulated_type)] == 4
    # Three ran 5 fake seconds: not in the 1 s bucket, all in the 5 s one.
    le = dict(simulated_type)
    assert (
        after[
            (
                "testfleet_attempt_duration_seconds_bucket",
                tuple(sorted((le | {"le": "5.0"}).items())),
            )
        ]
        == 4
    )
    assert after[("testfleet_attempt_duration_seconds_sum", simulated_type)] >= 15
    assert after[("testfleet_store_commit_seconds_count", ())] > 0
    assert after[("testfleet_worker_up", (("worker_id", "w1"),))] == 1
    assert after[("testfleet_worker_slots", (("worker_id", "w1"),))] == 2
    assert after[("testfleet_workers", (("status", "connected"),))] == 1
    assert after[("testfleet_worker_channels", ())] == 1
    assert after[("testfleet_benchmark_rows_total", ())] == 0


async def test_queue_depth_and_oldest_age_by_priority(tmp_path: Path) -> None:
    clock = FakeClock(1_800_000_000.0)
    async with in_process_fleet(tmp_path / "m.duckdb", clock=clock) as fleet:
        metrics = watch(fleet)
        start = clock.now()
        await fleet.loop.submit([simulated("a", priority=1), simulated("b", priority=1)])
        await fleet.loop.submit([simulated("c", priority=7)])
        await clock.sleep(42)
        samples = scrape(metrics)
        waited = clock.now() - start
    assert samples[("testfleet_queue_depth", (("priority", "1"),))] == 2
    assert samples[("testfleet_queue_depth", (("priority", "7"),))] == 1
    age = samples[("testfleet_queue_oldest_age_seconds", (("priority", "1"),))]
    assert age == pytest.approx(waited, abs=1.0)
    assert samples[("testfleet_coordinator_uptime_seconds", ())] == pytest.approx(waited, abs=1.0)


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    histogram = Histogram((1.0, 5.0))
    for value in (0.5, 1.0, 3.0, 10.0):
        histogram.observe(value)
    assert histogram.buckets() == [("1.0", 2), ("5.0", 3), ("+Inf", 4)]
    assert histogram.total == 14.5


def a_test_row(outcome: str) -> TestResultRow:
    record = TestRecord(
        nodeid="t.py::a",
        location=TestLocation(path="t.py", lineno=1, domain="a"),
        phases=[PhaseReport(when=TestPhase.CALL, outcome=ReportOutcome.PASSED)],
    )
    return TestResultRow(
        seq=1, task_id="t", nodeid="t.py::a", attempt_id=1, worker_id="w1", run_id="r",
        project="p", rerun=0, outcome=TestOutcome(outcome), duration_seconds=0.1,
        crashed=False, recorded_time=0.0, record=record,
    )  # fmt: skip


def benchmark_row(batch_size: int) -> BenchmarkRow:
    fields = {name: None for name in BenchmarkRow.__dataclass_fields__}
    return BenchmarkRow(**fields | {"batch_size": batch_size})  # type: ignore[arg-type]


class EmptyView:
    """A fleet with no workers and no tasks, as far as the gauges ask."""

    def worker_counts(self) -> dict[object, int]:
        return {}

    def workers(self) -> list[object]:
        return []

    def queued_by_priority(self) -> dict[int, object]:
        return {}

    def speculation_counts(self) -> dict[object, int]:
        return {}

    def slots(self) -> SlotUse:
        return SlotUse(0, 0)


def test_hooks_for_alerts_and_notifications_show_in_the_scrape() -> None:
    metrics = Metrics(FakeClock(), EmptyView(), lambda: 0)  # type: ignore[arg-type]
    metrics.count_notification("webhook", "sent")
    metrics.count_notification("webhook", "sent")
    metrics.set_firing_alerts(lambda: {"worker_lost": 2})
    metrics.set_open_regressions({("benchmark", "latency_ms"): 1})
    samples = scrape(metrics)
    assert (
        samples[("testfleet_notifications_total", (("receiver", "webhook"), ("result", "sent")))]
        == 2
    )
    assert samples[("testfleet_alerts_firing", (("rule", "worker_lost"),))] == 2
    assert (
        samples[("testfleet_regressions_open", (("figure", "latency_ms"), ("kind", "benchmark")))]
        == 1
    )


def test_test_outcomes_and_benchmark_rows_are_counted_from_a_turn(tmp_path: Path) -> None:
    metrics = Metrics(FakeClock(), EmptyView(), lambda: 0)  # type: ignore[arg-type]
    metrics.observe_batch(WriteBatch(test_rows=[a_test_row("passed"), a_test_row("failed")]))
    metrics.observe_batch(WriteBatch(benchmark_rows=[benchmark_row(8), benchmark_row(16)]))
    samples = scrape(metrics)
    assert samples[("testfleet_test_results_total", (("outcome", "passed"),))] == 1
    assert samples[("testfleet_test_results_total", (("outcome", "failed"),))] == 1
    assert samples[("testfleet_benchmark_rows_total", ())] == 2


async def test_the_lag_probe_measures_how_late_a_sleeper_wakes() -> None:
    clock = FakeClock()
    metrics = Metrics(clock, EmptyView(), lambda: 0)  # type: ignore[arg-type]
    probe = asyncio.create_task(metrics.probe_lag(interval=1.0))
    await asyncio.sleep(0)  # the probe sleeps
    clock.advance(1.0)  # on time
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert metrics.loop_lag_seconds == 0.0
    clock.advance(1.25)  # the loop was busy: it woke the sleeper 0.25 s late
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert metrics.loop_lag_seconds == pytest.approx(0.25)
    assert scrape(metrics)[("testfleet_event_loop_lag_seconds", ())] == pytest.approx(0.25)
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe


def test_heartbeat_lag_is_a_histogram_in_seconds() -> None:
    from testfleet.coordinator.settings import CoordinatorSettings
    from testfleet.coordinator.state import CoordinatorState

    clock = FakeClock()
    metrics = Metrics(clock, StateView(CoordinatorState(CoordinatorSettings(), clock.now())), int)
    for seconds in (0.0004, 0.003, 0.003, 0.7):
        metrics.observe_heartbeat_lag(seconds)
    after = scrape(metrics)
    assert after[("testfleet_heartbeat_lag_seconds_count", ())] == 4
    assert after[("testfleet_heartbeat_lag_seconds_bucket", (("le", "0.001"),))] == 1
    assert after[("testfleet_heartbeat_lag_seconds_bucket", (("le", "0.005"),))] == 3
    assert after[("testfleet_heartbeat_lag_seconds_bucket", (("le", "1.0"),))] == 4
    assert after[("testfleet_heartbeat_lag_seconds_sum", ())] == pytest.approx(0.7064)
