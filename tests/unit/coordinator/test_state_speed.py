"""The coordinator state measures worker speeds from what they finish (worker_speed.py)
and hands them to the policy: completed attempts by work key, pytest chunks test by
test; a worker that turns slow is handed to the loop to log; the API shows it."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_coordinator_state import SETTINGS, Harness, assigned, result, spec
from test_dashboard_views import T0, snapshot
from test_state_test_tasks import chunk_result, chunk_spec, record

from testfleet.coordinator.api_views import worker_view
from testfleet.coordinator.dashboard.templates import Templates
from testfleet.coordinator.dashboard.views import worker_row
from testfleet.coordinator.events import WorkerFrame
from testfleet.coordinator.metrics import Metrics
from testfleet.coordinator.state_view import StateView
from testfleet.coordinator.worker_speed import SpeedChangeKind, WorkerSpeed
from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.result import TaskResult
from testfleet.domain.work_keys import node_work_key, work_key
from testfleet.protocol.messages import AttemptResult, Result
from testfleet.scheduling.estimated_finish import estimated_finish
from testfleet.scheduling.policies import PolicyName
from testfleet.scheduling.scheduler import schedule
from testfleet.scheduling.view import SchedulingDecisions, SchedulingView
from testfleet.testing import FakeClock


def report(h: Harness, connection: int, attempt: int, done: TaskResult) -> None:
    h.turn(
        WorkerFrame(connection, Result(results=[AttemptResult(attempt_id=attempt, result=done)]))
    )


def finish(h: Harness, connection: int, task_id: str, attempt: int, took: float) -> None:
    done = result(task_id, f"w{connection}")
    report(h, connection, attempt, done.model_copy(update={"execution_time_seconds": took}))


def run_each_key_on_both(h: Harness, keys: range, took: dict[str, float]) -> None:
    """Workers w1 (connection 1) and w2 (2), one slot each, run every key once."""
    for k in keys:
        h.submit(spec(f"a{k}", config={"seed": k}), spec(f"b{k}", config={"seed": k}))
        placed = {t: a for e in h.effects[-1:] for t, a in assigned(e).items()}
        for task_id, (connection, attempt) in sorted(placed.items()):
            finish(h, connection, task_id, attempt, took[f"w{connection}"])


def test_completed_attempts_measure_speed_and_the_policy_sees_it() -> None:
    seen: list[SchedulingView] = []

    def spy(view: SchedulingView) -> SchedulingDecisions:
        seen.append(view)
        return schedule(view)

    h = Harness()
    h.state.policy = spy
    h.connect(1, "w1")
    h.connect(2, "w2")
    run_each_key_on_both(h, range(8), {"w1": 5.0, "w2": 10.0})
    assert h.state.speeds.factor("w1") > 1.8
    assert h.state.speeds.factor("w2") < 0.55
    key = work_key(TaskType.SIMULATED, {"seed": 3})
    assert h.state.speeds.typical[key][HardwareKind.CPU] > 0
    # The view each turn carries the books (the policy reads, never writes).
    assert seen[-1].speed_factors["w1"] > 1.8
    assert key in seen[-1].typical_seconds
    # And the API shows each worker's factor.
    shown = {w.record.worker_id: worker_view(w) for w in StateView(h.state).workers()}
    assert shown["w1"].speed_factor > 1.8
    assert shown["w1"].speed_samples >= 5
    assert not shown["w2"].slowed


def test_a_worker_that_turns_slow_is_handed_to_the_loop_once() -> None:
    h = Harness()
    h.connect(1, "w1")
    h.connect(2, "w2")
    run_each_key_on_both(h, range(0, 30), {"w1": 10.0, "w2": 10.0})
    assert h.state.take_speed_changes() == []
    run_each_key_on_both(h, range(30, 60), {"w1": 10.0, "w2": 40.0})
    changes = h.state.take_speed_changes()
    assert [(c.worker_id, c.kind) for c in changes] == [("w2", SpeedChangeKind.SLOWED)]
    assert h.state.take_speed_changes() == []  # handed over once
    assert worker_view(StateView(h.state).worker("w2")).slowed  # type: ignore[arg-type]


def test_a_pytest_chunk_is_measured_test_by_test() -> None:
    h = Harness()
    h.connect(1, "w1")
    h.submit(chunk_spec())
    ((connection, attempt),) = assigned(h.effects[-1]).values()
    report(h, connection, attempt, chunk_result("w1", [record("tests/test_a.py::test_1")]))
    typical = h.state.speeds.typical
    assert set(typical) == {node_work_key("path:/srv/project", "tests/test_a.py::test_1")}


def test_the_setting_picks_the_policy() -> None:
    assert Harness().state.policy is schedule
    chosen = Harness(replace(SETTINGS, scheduling_policy=PolicyName.ESTIMATED_FINISH))
    assert chosen.state.policy is estimated_finish


def test_metrics_show_each_workers_factor_and_a_slowed_one() -> None:
    h = Harness()
    h.connect(1, "w1")
    h.connect(2, "w2")
    run_each_key_on_both(h, range(0, 30), {"w1": 10.0, "w2": 10.0})
    run_each_key_on_both(h, range(30, 60), {"w1": 10.0, "w2": 40.0})
    metrics = Metrics(FakeClock(), StateView(h.state), lambda: 0)
    text = generate_latest(metrics.registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("testfleet_worker_slowed", (("worker_id", "w2"),))] == 1
    assert samples[("testfleet_worker_slowed", (("worker_id", "w1"),))] == 0
    assert samples[("testfleet_worker_speed_factor", (("worker_id", "w2"),))] < 0.5


def test_the_dashboard_workers_rows_show_a_measured_speed_and_flag_a_slowed_worker() -> None:
    measured = replace(snapshot("fast-1"), speed=WorkerSpeed(2.04, 12, 2.0, False))
    slowed = replace(snapshot("hot-1"), speed=WorkerSpeed(0.41, 32, 1.0, True))
    rows = [worker_row(s, 15.0) for s in (measured, slowed, snapshot("new-1"))]
    html = Templates().render("_worker_rows.html", rows=rows, base="/dashboard", now=T0)
    fast, hot, new = (html.split(f'data-worker="{w}"')[1] for w in ("fast-1", "hot-1", "new-1"))
    assert "speed 2.04\u00d7" in fast.split("</tr>")[0]
    assert "speed 0.41\u00d7 · slowed" in hot.split("</tr>")[0]
    assert "speed" not in new.split("</tr>")[0]  # not measured yet: nothing to show
