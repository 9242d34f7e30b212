"""Time one schedule() call on big queues: prints the median of repeated runs.

Run: .venv/bin/python benchmarks/scheduler.py [--repeats N]

Cases (10,000 pending tasks over 10 priority levels, 50 workers, 20 match keys):
  * placeable:      every worker has 4 free slots; 200 tasks get placed, then it stops.
  * no free slots:  every worker is busy; it returns almost at once.
  * unplaceable:    every task needs CUDA; the 10 GPU workers are busy and the 40 CPU
                    workers have 4 free slots each: it walks the whole queue, each
                    task after its key is exhausted costing one set lookup.
  * unschedulable:  every task needs CUDA and no worker has a GPU: as above, plus
                    the reason for each of the 20 keys.
"""

from __future__ import annotations

import argparse
import statistics
import time

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import CpuInfo, GpuInfo, WorkerCapabilities
from testfleet.domain.task import Requirements
from testfleet.scheduling.scheduler import schedule
from testfleet.scheduling.view import PendingTask, SchedulingView, WorkerView

N_TASKS = 10_000
N_WORKERS = 50
N_LEVELS = 10
N_KEYS = 20
H100 = GpuInfo(index=0, vendor="nvidia", name="NVIDIA H100", memory_gb=80.0, compute_capability=9.0)


def make_workers(free_slots: int, *, gpus: bool, gpus_busy: bool = False) -> list[WorkerView]:
    workers = []
    for i in range(N_WORKERS):
        has_gpu = gpus and i % 5 == 0
        caps = WorkerCapabilities(
            hostname=f"host{i}",
            os="Linux",
            python_version="3.11",
            cpu=CpuInfo(logical_cores=8 + i % 4 * 8),
            memory_gb=16.0 * (1 + i % 4),
            gpus=[H100] if has_gpu else [],
            hardware=[HardwareKind.CPU, HardwareKind.CUDA] if has_gpu else [HardwareKind.CPU],
            task_types=list(TaskType),
            tags={"rack": "ab"[i % 2]},
        )
        slots = 0 if has_gpu and gpus_busy else free_slots
        workers.append(WorkerView(worker_id=f"w{i:03d}", capabilities=caps, free_slots=slots))
    return workers


def make_requirements(*, need_cuda: bool) -> list[Requirements]:
    reqs = []
    for k in range(N_KEYS):
        reqs.append(
            Requirements(
                hardware=[HardwareKind.CUDA] if need_cuda else [],
                min_memory_gb=float(4 * (k % 5)),
                tags={"rack": "ab"[k % 2]} if k % 3 == 0 else {},
            )
        )
    return reqs


def make_view(
    free_slots: int, *, need_cuda: bool = False, gpus: bool = True, gpus_busy: bool = False
) -> SchedulingView:
    reqs = make_requirements(need_cuda=need_cuda)
    levels: dict[int, list[PendingTask]] = {p: [] for p in range(N_LEVELS)}
    keys: dict[str, tuple[TaskType, Requirements]] = {}
    for i in range(N_TASKS):
        r = reqs[i % N_KEYS]
        key = f"{TaskType.SIMULATED.value}|{r.key()}"
        keys[key] = (TaskType.SIMULATED, r)
        priority = (i * 7) % N_LEVELS
        levels[priority].append(
            PendingTask(f"task-{i:05d}", TaskType.SIMULATED, priority, float(i), r, key)
        )
    return SchedulingView(
        now=float(N_TASKS),
        pending_by_priority=levels,
        workers=make_workers(free_slots, gpus=gpus, gpus_busy=gpus_busy),
        pending_keys=keys,
    )


def median_ms(v: SchedulingView, repeats: int) -> tuple[float, int]:
    times = []
    placed = 0
    for _ in range(repeats):
        start = time.perf_counter()
        decisions = schedule(v)
        times.append(time.perf_counter() - start)
        placed = len(decisions.placements)
    return statistics.median(times) * 1000, placed


def main() -> None:
    parser = argparse.ArgumentParser(description="Time schedule() on big queues.")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    cases = [
        ("10k tasks x 50 workers, 4 free slots each", make_view(4)),
        ("10k tasks x 50 workers, 0 free slots", make_view(0)),
        (
            "10k unplaceable tasks (GPU workers busy), free CPU slots",
            make_view(4, need_cuda=True, gpus_busy=True),
        ),
        (
            "10k unschedulable tasks (no GPU worker), free slots",
            make_view(4, need_cuda=True, gpus=False),
        ),
    ]
    print(f"schedule() median of {args.repeats} runs")
    for name, v in cases:
        ms, placed = median_ms(v, args.repeats)
        print(f"  {name:<58} {ms:8.3f} ms  ({placed} placed)")


if __name__ == "__main__":
    main()
