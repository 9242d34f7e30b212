"""Estimated finish against best fit on the simulator: small traces worked out by
hand (where it wins, and where it must not take the GPU), the generator's repeated
work, seeded history, and the same decisions as best fit without history."""

from __future__ import annotations

import dataclasses
import statistics

import pytest

from testfleet.domain.enums import HardwareKind
from testfleet.domain.task import Requirements
from testfleet.scheduling.estimated_finish import estimated_finish
from testfleet.scheduling.scheduler import schedule
from testfleet.simulation import SimulationReport, Simulator, Trace, generate_trace
from testfleet.simulation.history import past_runs
from testfleet.simulation.trace import TraceTask, TraceWorker

CPU = HardwareKind.CPU
CUDA = HardwareKind.CUDA


def figures(report: SimulationReport) -> SimulationReport:
    return dataclasses.replace(report, wall_seconds=0.0, policy_seconds=0.0, policy="")


def cpu(worker_id: str, speed: float = 1.0) -> TraceWorker:
    return TraceWorker(worker_id=worker_id, hardware=[CPU], speed=speed)


def gpu(worker_id: str, slots: int = 1) -> TraceWorker:
    return TraceWorker(worker_id=worker_id, hardware=[CPU, CUDA], slots=slots)


def mixed(task_id: str, at: float) -> TraceTask:
    """Work a GPU runs 8 times faster but does not need."""
    return TraceTask(
        task_id=task_id, submit_time=at, durations={CPU: 120.0, CUDA: 15.0}, work="mixed"
    )


def short(task_id: str, at: float, work: str = "short") -> TraceTask:
    return TraceTask(task_id=task_id, submit_time=at, durations={CPU: 10.0}, work=work)


def both(trace: Trace, runs: int = 0) -> tuple[Simulator, Simulator]:
    history = past_runs(trace, runs)
    fit = Simulator(trace, schedule, history=history)
    fit.run()
    finish = Simulator(trace, estimated_finish, history=history)
    finish.run()
    return fit, finish


def test_with_history_a_gpu_to_spare_runs_the_job_it_speeds_up() -> None:
    trace = Trace.of([cpu("cpu-a"), gpu("gpu-a", slots=2)], [mixed("m1", 0.0)])
    fit, finish = both(trace, runs=4)
    # Best fit keeps the GPU free: 120 s on the CPU. History says 15 s on the GPU,
    # and one of its two slots stays free for GPU work.
    assert fit.worker_of == {"m1": "cpu-a"}
    assert fit.finished_at == {"m1": 120.0}
    assert finish.worker_of == {"m1": "gpu-a"}
    assert finish.finished_at == {"m1": 15.0}


def test_it_never_takes_the_only_gpu_slot_even_when_it_would_win() -> None:
    # A GPU job arrives a second later: best fit's rule (keep the GPU free) is right.
    gpu_job = TraceTask(
        task_id="g1",
        submit_time=1.0,
        requirements=Requirements(hardware=[CUDA]),
        durations={CUDA: 60.0},
    )
    trace = Trace.of([cpu("cpu-a"), gpu("h200", slots=1)], [mixed("m1", 0.0), gpu_job])
    fit, finish = both(trace, runs=4)
    assert finish.worker_of == fit.worker_of == {"m1": "cpu-a", "g1": "h200"}
    assert finish.assigned_at["g1"] == 1.0  # it did not wait


def test_measured_speed_sends_the_long_job_to_the_fast_worker() -> None:
    # Two CPU workers, one three times as fast; history of the works on both.
    workers = [cpu("cpu-a", speed=0.5), cpu("cpu-b", speed=1.5)]
    warm = [short(f"s{n}", 0.0, work=f"w{n}") for n in range(12)]
    # Later, one long job and one short one together: best fit gives the first
    # (the long one, older) to cpu-a by id; estimated finish to the fast cpu-b.
    long_job = TraceTask(task_id="long", submit_time=500.0, durations={CPU: 300.0}, work="long")
    late = [long_job, short("z-short", 500.0)]
    trace = Trace.of(workers, warm + late)
    fit, finish = both(trace, runs=3)
    assert fit.worker_of["long"] == "cpu-a"
    assert finish.worker_of["long"] == "cpu-b"
    assert finish.finished_at["long"] - 500.0 == pytest.approx(200.0)  # 300 / 1.5
    assert fit.finished_at["long"] - 500.0 == pytest.approx(600.0)  # 300 / 0.5


def test_without_history_it_replays_exactly_as_best_fit() -> None:
    trace = generate_trace(40, 600, seed=5)
    fit = Simulator(trace, schedule).run()
    finish = Simulator(trace, estimated_finish).run()
    assert figures(finish) == figures(fit)


def test_repeated_work_keeps_the_arrivals_and_names_the_work() -> None:
    plain = generate_trace(20, 300, seed=2)
    repeated = generate_trace(20, 300, seed=2, works=10)
    assert [t.submit_time for t in plain.tasks] == [t.submit_time for t in repeated.tasks]
    assert plain.workers == repeated.workers
    assert all(t.work is None for t in plain.tasks)
    assert {t.work for t in repeated.tasks} <= {f"work-{n}" for n in range(10)}
    # A work's runs differ only by their own small noise.
    runs = [t.durations for t in repeated.tasks if t.work == repeated.tasks[0].work]
    first = min(runs[0].values())
    assert all(0.5 * first < min(r.values()) < 2 * first for r in runs)
    with pytest.raises(ValueError, match="works"):
        generate_trace(2, 2, seed=1, works=-1)


def test_past_runs_are_deterministic_and_only_of_repeated_work() -> None:
    trace = generate_trace(20, 300, seed=2, works=10)
    assert past_runs(trace, 3) == past_runs(trace, 3)
    assert len(past_runs(trace, 3)) == 3 * len({t.work for t in trace.tasks})
    assert past_runs(generate_trace(20, 300, seed=2), 3) == []
    with pytest.raises(ValueError, match="runs"):
        past_runs(trace, -1)


def test_on_generated_traces_with_history_it_finishes_sooner_on_the_median() -> None:
    # Makespan is one job's tail, so single traces go either way (README); the
    # median over seeds is what the policy is judged by.
    ratios = []
    for seed in range(1, 5):
        trace = generate_trace(60, 1500, seed=seed, works=60)
        history = past_runs(trace, 20, seed)
        fit = Simulator(trace, schedule, history=history, turn_seconds=0.1).run()
        finish = Simulator(trace, estimated_finish, history=history, turn_seconds=0.1).run()
        assert finish.tasks_completed == fit.tasks_completed == 1500
        ratios.append(finish.makespan_seconds / fit.makespan_seconds)
    assert statistics.median(ratios) < 1.0, ratios
