"""How fast the store writes task lifecycles, in rows per second.

Run: ``.venv/bin/python benchmarks/store_write.py [--batches 10] [--batch-size 1000]``
     ``.venv/bin/python benchmarks/store_write.py --breakdown [--turn-size 250] [--turns 20]``

Each round writes ``--batch-size`` tasks through three group commits, as the
coordinator would over three turns of its loop: the tasks queued; then
assigned, each with its attempt; then completed, each attempt finished and
with its result. Every ``Store.write`` is one transaction. Records are built
before the clock starts, so the figures are the store's own cost (encoding to
Arrow, the upserts, the commit) on a temporary file. Prints figures only.

``--breakdown`` writes turns shaped as the dispatch benchmark's: each turn
inserts ``--turn-size`` new tasks, assigns the previous turn's (each with a
new attempt) and completes the ones before (attempt and result), in one
commit. It prints the loop's cost to encode a turn, then each turn committed
by a thread while this one keeps running Python (as the coordinator's loop
does beside its commit thread), for the write paths side by side, alternating
``--rounds`` times: ``per-statement`` (one ``execute`` per statement, the
path before issue 14's last change) and ``one-execute`` (the transaction as
one SQL text, ``writer.write_tables``), each at CPython's default switch
interval (5 ms) and at the one ``Store.commit`` sets while it commits
(``writer.COMMIT_SWITCH_INTERVAL_SECONDS``). A final line runs the store's own
``commit`` (what the coordinator does) the same way.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

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
    NewRows,
    ResultRecord,
    TaskRecord,
    WorkerRecord,
    WriteBatch,
)
from testfleet.domain.result import SimulationStatus, TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.store import Store
from testfleet.store.writer import (
    COMMIT_SWITCH_INTERVAL_SECONDS,
    EncodedTables,
    encode_checked,
    statement,
    write_tables,
)

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


def dispatch_turns(size: int, count: int) -> list[WriteBatch]:
    """Turns as the coordinator writes them under load: turn k inserts round k's
    tasks, assigns round k-1's (new attempts) and completes round k-2's."""
    rounds = [lifecycle_batches(r, size) for r in range(count)]
    turns: list[WriteBatch] = []
    for k in range(count + 2):
        new = NewRows()
        batch = WriteBatch(new_rows=new)
        if k < count:
            queued = rounds[k][0]
            batch.tasks += queued.tasks
            new.task_ids.update(t.task_id for t in queued.tasks)
        if 0 <= k - 1 < count:
            assigned = rounds[k - 1][1]
            batch.tasks += assigned.tasks
            batch.attempts += assigned.attempts
            new.attempt_ids.update(a.attempt_id for a in assigned.attempts)
        if 0 <= k - 2 < count:
            completed = rounds[k - 2][2]
            batch.tasks += completed.tasks
            batch.attempts += completed.attempts
            batch.results += completed.results
        turns.append(batch)
    return turns


def milliseconds(values: list[float]) -> str:
    return f"{1000 * statistics.median(values):7.2f} ms"


def per_statement(cursor: Any, tables: EncodedTables) -> None:
    """The write path before the one-execute transaction: one ``execute`` per statement."""
    cursor.execute("BEGIN TRANSACTION")
    for mapping, mode, arrow_table in tables:
        view = f"incoming_{mapping.table}"
        cursor.register(view, arrow_table)
        cursor.execute(statement(mapping, mode, view))
        cursor.unregister(view)
    cursor.execute("COMMIT")


def commit_beside_busy_thread(
    turns: list[WriteBatch], path_name: str, switch_interval: float | None
) -> tuple[list[float], list[float]]:
    """Each turn encoded here, then committed by a thread while this one keeps
    running Python (as the loop does); the encode and commit times.
    ``switch_interval`` None: the store's own commit, which sets its own."""
    encodes: list[float] = []
    commits: list[float] = []
    previous = sys.getswitchinterval()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    try:
        with (
            tempfile.TemporaryDirectory() as directory,
            Store(Path(directory) / "bench.duckdb", threads=1) as store,
        ):
            store.write(WriteBatch(workers=workers()))
            for batch in turns:
                began = time.perf_counter()
                prepared = store.prepare(batch)
                encodes.append(time.perf_counter() - began)
                # The store's own cursor: the benchmark compares write paths.
                path = {"per-statement": per_statement, "one-execute": write_tables}.get(path_name)
                commit: Callable[[], None] = (
                    prepared.commit
                    if path is None
                    else functools.partial(path, store._writer, prepared.tables)
                )
                done = threading.Event()
                took: list[float] = []

                def run(
                    commit: Callable[[], None] = commit,
                    took: list[float] = took,
                    done: threading.Event = done,
                ) -> None:
                    started = time.perf_counter()
                    commit()
                    took.append(time.perf_counter() - started)
                    done.set()

                thread = threading.Thread(target=run)
                thread.start()
                busy = 0
                while not done.is_set():  # the loop applying the next turn's events
                    for number in range(200):
                        busy += number
                thread.join()
                commits.append(took[0])
    finally:
        sys.setswitchinterval(previous)
    return encodes, commits


def breakdown(args: argparse.Namespace) -> None:
    turns = dispatch_turns(args.turn_size, args.turns)
    print(
        f"store_write --breakdown: {len(turns)} turns, each inserting {args.turn_size} "
        f"tasks, assigning {args.turn_size} and completing {args.turn_size}; one DuckDB thread"
    )
    alone: list[float] = []
    for batch in turns:
        began = time.perf_counter()
        encode_checked(batch)
        alone.append(time.perf_counter() - began)
    print(f"  encode a turn to Arrow (the loop's part), alone: {milliseconds(alone)}")
    variants: list[tuple[str, float | None]] = [
        (path_name, interval)
        for interval in (0.005, COMMIT_SWITCH_INTERVAL_SECONDS)
        for path_name in ("per-statement", "one-execute")
    ] + [("Store.commit", None)]
    figures: dict[tuple[str, float | None], list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            figures[variant].extend(commit_beside_busy_thread(turns, *variant)[1])
    print(
        f"  commit beside a busy Python thread, {args.rounds} alternating runs, medians per turn:"
    )
    for (path_name, interval), commits in figures.items():
        where = "its own" if interval is None else f"{1000 * interval:3.1f} ms"
        print(f"  {path_name:14s} switch interval {where:8s} commit {milliseconds(commits)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10, help="rounds of lifecycles")
    parser.add_argument("--batch-size", type=int, default=1000, help="tasks per round")
    parser.add_argument(
        "--breakdown", action="store_true", help="a dispatch turn's commit, by write path"
    )
    parser.add_argument("--turn-size", type=int, default=250, help="with --breakdown")
    parser.add_argument("--turns", type=int, default=20, help="with --breakdown")
    parser.add_argument("--rounds", type=int, default=2, help="with --breakdown: runs per path")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(args)
        return

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
