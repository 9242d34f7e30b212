"""How fast the store writes task lifecycles, in rows per second.

Run: ``.venv/bin/python benchmarks/store_write.py [--batches 10] [--batch-size 1000]``

Each round writes ``--batch-size`` tasks through three group commits, as the
coordinator would over three turns of its loop: the tasks queued; then
assigned, each with its attempt; then completed, each attempt finished and
with its result. Every ``Store.write`` is one transaction. Records are built
before the clock starts, so the figures are the store's own cost (encoding to
Arrow, the upserts, the commit) on a temporary file. Prints figures only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from testfleet.domain.enums import (
    AttemptStatus,
    ResultDisposition,
    ResultStatus,
    TaskStatus,
    TaskType,
    WorkerStatus,
)
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.records import (
    AttemptRecord,
    ResultRecord,
    TaskRecord,
    WorkerRecord,
    WriteBatch,
)
from testfleet.domain.result import SimulationStatus, TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.store import Store

T0 = 1_700_000_000.0


def lifecycle_batches(round_index: int, size: int) -> list[WriteBatch]:
    """The three batches of one round: queued, assigned (+ attempts), completed (+ results)."""
    queued: list[TaskRecord] = []
    assigned: list[TaskRecord] = []
    completed: list[TaskRecord] = []
    attempts: list[AttemptRecord] = []
    finished: list[AttemptRecord] = []
    results: list[ResultRecord] = []
    for i in range(size):
        attempt_id = round_index * size + i + 1
        task_id = f"bench-{attempt_id}"
        worker_id = f"w{i % 8}"
        spec = TaskSpec(
            task_id=task_id,
            type=TaskType.SIMULATED,
            priority=i % 10,
            config={"duration_seconds": 0.5},
        )
        now = T0 + attempt_id * 0.001
        task = TaskRecord(spec=spec, status=TaskStatus.QUEUED, create_time=now, queued_at=now)
        queued.append(task)
        assigned.append(
            replace(
                task,
                status=TaskStatus.ASSIGNED,
                worker_id=worker_id,
                attempts=1,
                current_attempt_id=attempt_id,
            )
        )
        attempt = AttemptRecord(
            attempt_id=attempt_id,
            task_id=task_id,
            worker_id=worker_id,
            attempt=1,
            status=AttemptStatus.ASSIGNED,
            start_time=now + 0.1,
        )
        attempts.append(attempt)
        completed.append(
            replace(
                assigned[-1], status=TaskStatus.COMPLETED, start_time=now + 0.1, end_time=now + 1
            )
        )
        finished.append(
            replace(
                attempt,
                status=AttemptStatus.COMPLETED,
                accepted_time=now + 0.2,
                end_time=now + 1,
                execution_time_seconds=0.8,
                hardware_metrics={"cpu_percent": 3.5},
            )
        )
        results.append(
            ResultRecord(
                attempt_id=attempt_id,
                task_id=task_id,
                worker_id=worker_id,
                received_time=now + 1,
                disposition=ResultDisposition.OUTCOME,
                result=TaskResult(
                    task_id=task_id,
                    worker_id=worker_id,
                    status=ResultStatus.COMPLETED,
                    execution_time_seconds=0.8,
                    results={"latency_ms": 12.5},
                    simulation_status=SimulationStatus(is_simulated=True),
                ),
            )
        )
    return [
        WriteBatch(tasks=queued),
        WriteBatch(tasks=assigned, attempts=attempts),
        WriteBatch(tasks=completed, attempts=finished, results=results),
    ]


def workers() -> list[WorkerRecord]:
    return [
        WorkerRecord(
            worker_id=f"w{i}",
            hostname=f"w{i}.lab",
            registration_time=T0,
            last_heartbeat=T0,
            status=WorkerStatus.CONNECTED,
            capabilities=WorkerCapabilities(
                hostname=f"w{i}.lab", os="Linux", python_version="3.11"
            ),
            slots=4,
        )
        for i in range(8)
    ]


def rows(batch: WriteBatch) -> int:
    return len(batch.tasks) + len(batch.attempts) + len(batch.results) + len(batch.workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10, help="rounds of lifecycles")
    parser.add_argument("--batch-size", type=int, default=1000, help="tasks per round")
    args = parser.parse_args()

    rounds = [lifecycle_batches(r, args.batch_size) for r in range(args.batches)]
    phases = ["queued", "assigned + attempts", "completed + attempts + results"]
    phase_seconds = [0.0, 0.0, 0.0]
    phase_rows = [0, 0, 0]

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.duckdb"
        with Store(path) as store:
            store.write(WriteBatch(workers=workers()))
            started = time.perf_counter()
            for batches in rounds:
                for phase, batch in enumerate(batches):
                    began = time.perf_counter()
                    store.write(batch)
                    phase_seconds[phase] += time.perf_counter() - began
                    phase_rows[phase] += rows(batch)
            total_seconds = time.perf_counter() - started
            stored = store.count_tasks()
        size_mb = path.stat().st_size / 1e6

    total_rows = sum(phase_rows)
    writes = 3 * args.batches
    print(f"store_write: {args.batches} rounds x {args.batch_size} task lifecycles -> {path.name}")
    for name, seconds, count in zip(phases, phase_seconds, phase_rows, strict=True):
        print(
            f"  {name:32s} {count:9,d} rows  {seconds:7.3f} s  "
            f"{count / seconds:12,.0f} rows/s  {1000 * seconds / args.batches:8.1f} ms/write"
        )
    print(
        f"  {'total':32s} {total_rows:9,d} rows  {total_seconds:7.3f} s  "
        f"{total_rows / total_seconds:12,.0f} rows/s  {writes / total_seconds:8.1f} writes/s"
    )
    print(f"  tasks stored: {stored:,d}; file size {size_mb:.1f} MB")


if __name__ == "__main__":
    main()
