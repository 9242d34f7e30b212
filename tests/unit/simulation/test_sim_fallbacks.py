"""Requirement fallbacks on the fleet simulator, against today's policy on the same trace.

A long job holds the only H200; a second job prefers an H200 but accepts any CUDA
GPU after 10 minutes. With the fallback it runs on the idle H100 at minute 10;
without it (the same trace, the H200 only) it waits for the long job to end.
"""

from __future__ import annotations

from pathlib import Path

from testfleet.domain.enums import HardwareKind
from testfleet.domain.task import RequirementFallback, Requirements
from testfleet.scheduling.scheduler import schedule
from testfleet.simulation import Simulator, Trace
from testfleet.simulation.trace import TraceTask, TraceWorker, dump_trace, load_trace

CPU = HardwareKind.CPU
CUDA = HardwareKind.CUDA
H200 = Requirements(hardware=[CUDA], gpu_model="H200")


def trace(*, fallback: bool) -> Trace:
    workers = [
        TraceWorker(worker_id="h200", hardware=[CPU, CUDA], gpu_model="NVIDIA H200"),
        TraceWorker(worker_id="h100", hardware=[CPU, CUDA], gpu_model="NVIDIA H100"),
    ]
    fallbacks = (
        [RequirementFallback(after_seconds=600, requirements=Requirements(hardware=[CUDA]))]
        if fallback
        else []
    )
    tasks = [
        TraceTask(task_id="long", submit_time=0, requirements=H200, durations={CUDA: 3600}),
        TraceTask(
            task_id="prefers-h200",
            submit_time=10,
            requirements=H200,
            fallbacks=fallbacks,
            durations={CUDA: 100},
        ),
    ]
    return Trace.of(workers, tasks)


def test_a_task_falls_back_to_the_idle_h100_after_its_expiry() -> None:
    with_fallback = Simulator(trace(fallback=True), schedule)
    report = with_fallback.run()
    assert report.tasks_completed == 2
    assert with_fallback.worker_of["prefers-h200"] == "h100"
    assert with_fallback.assigned_at["prefers-h200"] == 610.0  # submitted at 10, +600 s
    assert with_fallback.finished_at["prefers-h200"] == 710.0

    # Today's behaviour on the same trace without the fallback: it waits for the H200.
    without = Simulator(trace(fallback=False), schedule)
    baseline = without.run()
    assert without.worker_of["prefers-h200"] == "h200"
    assert without.assigned_at["prefers-h200"] == 3600.0
    assert baseline.queue_wait_p99_seconds > report.queue_wait_p99_seconds
    # Waiting, it also ran after the long job: the fallback ends the trace 100 s sooner.
    assert (report.makespan_seconds, baseline.makespan_seconds) == (3600.0, 3700.0)


def test_a_free_h200_is_taken_on_the_first_slice() -> None:
    workers = [
        TraceWorker(worker_id="h200", hardware=[CPU, CUDA], gpu_model="NVIDIA H200"),
        TraceWorker(worker_id="h100", hardware=[CPU, CUDA]),
    ]
    only = trace(fallback=True).tasks[1]
    simulator = Simulator(Trace.of(workers, [only]), schedule)
    simulator.run()
    assert simulator.worker_of["prefers-h200"] == "h200"
    assert simulator.assigned_at["prefers-h200"] == 10.0


def test_fallbacks_and_gpu_models_survive_a_trace_file(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    original = trace(fallback=True)
    dump_trace(original, path)
    assert load_trace(path) == original
