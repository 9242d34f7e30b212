"""The fleet simulator on traces small enough to work out by hand.

The real coordinator state and scheduler run inside; only workers, time and
the store are simulated, so these figures are what today's placement does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from testfleet.domain.enums import HardwareKind
from testfleet.domain.task import Requirements
from testfleet.scheduling.scheduler import schedule
from testfleet.scheduling.view import SchedulingDecisions, SchedulingView
from testfleet.simulation import SimulationReport, Simulator, Trace, generate_trace
from testfleet.simulation.trace import TraceTask, TraceWorker

CPU = HardwareKind.CPU
CUDA = HardwareKind.CUDA


def worker(worker_id: str, *, gpu: bool = False, slots: int = 1, speed: float = 1.0) -> TraceWorker:
    return TraceWorker(
        worker_id=worker_id, hardware=[CPU, CUDA] if gpu else [CPU], slots=slots, speed=speed
    )


def task(task_id: str, at: float, seconds: float, *, gpu: bool = False, **fields: Any) -> TraceTask:
    if gpu:
        return TraceTask(
            task_id=task_id,
            submit_time=at,
            requirements=Requirements(hardware=[CUDA]),
            durations={CUDA: seconds},
            **fields,
        )
    return TraceTask(task_id=task_id, submit_time=at, durations={CPU: seconds}, **fields)


def figures(report: SimulationReport) -> SimulationReport:
    """The report without its wall-time fields (the only ones a machine changes)."""
    return dataclasses.replace(report, wall_seconds=0.0, policy_seconds=0.0)


def test_a_tiny_trace_gives_the_figures_worked_out_by_hand() -> None:
    # One slot: a (10 s) runs 0-10, b (5 s, same time, later id) waits 10 s and
    # runs 10-15, c arrives at 20 to an idle worker and runs 20-24.
    trace = Trace.of([worker("w1")], [task("a", 0, 10), task("b", 0, 5), task("c", 20, 4)])
    simulator = Simulator(trace)
    report = simulator.run()
    assert simulator.assigned_at == {"a": 0.0, "b": 10.0, "c": 20.0}
    assert simulator.finished_at == {"a": 10.0, "b": 15.0, "c": 24.0}
    assert report.makespan_seconds == 24.0
    assert report.queue_wait_p50_seconds == 0.0  # waits 0, 10, 0
    assert report.queue_wait_p99_seconds == 10.0
    assert report.utilisation == {CPU: pytest.approx(19 / 24)}
    assert report.tasks_completed == 3
    assert report.tasks_left == 0
    assert report.decisions == 3
    assert report.rows_dropped > 0  # the state's writes were made and dropped


def test_the_same_seed_gives_the_same_figures() -> None:
    first = Simulator(generate_trace(20, 300, seed=7)).run()
    second = Simulator(generate_trace(20, 300, seed=7)).run()
    other = Simulator(generate_trace(20, 300, seed=8)).run()
    assert figures(first) == figures(second)
    assert figures(first) != figures(other)
    assert first.tasks_completed == 300
    assert first.decisions == 300


def test_a_gpu_task_waits_for_the_gpu_worker_while_cpu_tasks_go_to_cpu_workers() -> None:
    # GPU work first (priority 1): g1 takes the only GPU worker, g2 must wait
    # for it even when the CPU worker frees up at 5; c1 goes to the CPU worker
    # (best fit) and c2 waits for it rather than for the busy GPU box.
    trace = Trace.of(
        [worker("cpu-0"), worker("gpu-0", gpu=True)],
        [
            task("g1", 0, 10, gpu=True, priority=1),
            task("g2", 0, 10, gpu=True, priority=1),
            task("c1", 0, 5),
            task("c2", 0, 5),
        ],
    )
    simulator = Simulator(trace)
    report = simulator.run()
    assert simulator.worker_of == {"g1": "gpu-0", "g2": "gpu-0", "c1": "cpu-0", "c2": "cpu-0"}
    assert simulator.assigned_at == {"g1": 0.0, "c1": 0.0, "c2": 5.0, "g2": 10.0}
    assert report.makespan_seconds == 20.0
    assert report.utilisation == {CPU: pytest.approx(10 / 20), CUDA: pytest.approx(20 / 20)}


def test_a_faster_worker_finishes_its_task_sooner() -> None:
    trace = Trace.of(
        [worker("a-slow", speed=1.0), worker("b-fast", speed=2.0)],
        [task("t1", 0, 10), task("t2", 0, 10)],
    )
    simulator = Simulator(trace)
    report = simulator.run()
    # Best fit ties by worker id: t1 to a-slow, t2 to b-fast.
    assert simulator.worker_of == {"t1": "a-slow", "t2": "b-fast"}
    assert simulator.finished_at == {"t1": 10.0, "t2": 5.0}
    assert report.makespan_seconds == 10.0


def test_a_task_runs_at_its_duration_for_the_worker_hardware_class() -> None:
    # Listed for both classes: 120 s on a CPU worker, 15 s on a GPU one.
    both = TraceTask(task_id="m", durations={CPU: 120.0, CUDA: 15.0})
    assert both.duration_on(worker("g", gpu=True)) == 15.0
    assert both.duration_on(worker("c", speed=2.0)) == 60.0
    # A class not listed falls back to the longest listed duration.
    cpu_only = TraceTask(task_id="c", durations={CPU: 30.0})
    assert cpu_only.duration_on(worker("g", gpu=True)) == 30.0


def test_the_policy_is_a_parameter_with_the_schedulers_signature() -> None:
    seen: list[int] = []

    def counting(view: SchedulingView) -> SchedulingDecisions:
        decisions = schedule(view)
        seen.append(len(decisions.placements))
        return decisions

    def place_nothing(view: SchedulingView) -> SchedulingDecisions:
        return SchedulingDecisions()

    trace = Trace.of([worker("w1", slots=2)], [task("a", 0, 1), task("b", 0, 1)])
    report = Simulator(trace, counting).run()
    assert report.policy == "counting"
    assert sum(seen) == report.decisions == 2
    idle = Simulator(trace, place_nothing).run()
    assert (idle.tasks_completed, idle.tasks_left, idle.decisions) == (0, 2, 0)
    assert idle.makespan_seconds == 0.0


def test_a_turn_applies_together_what_arrives_while_the_loop_is_busy() -> None:
    # With 3 s turns, c (submitted at 1) waits for the turn at 3.
    trace = Trace.of([worker("w1", slots=2)], [task("a", 0, 10), task("c", 1, 1)])
    simulator = Simulator(trace, turn_seconds=3.0)
    simulator.run()
    assert simulator.assigned_at == {"a": 0.0, "c": 3.0}
    exact = Simulator(trace)
    exact.run()
    assert exact.assigned_at == {"a": 0.0, "c": 1.0}


def test_bad_simulator_settings_are_refused() -> None:
    trace = Trace.of([worker("w1")], [])
    with pytest.raises(ValueError, match="turn_seconds"):
        Simulator(trace, turn_seconds=-1)
    with pytest.raises(ValueError, match="tick_seconds"):
        Simulator(trace, tick_seconds=0)
    assert Simulator(trace).run().tasks == 0
