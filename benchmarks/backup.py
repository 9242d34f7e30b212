"""What a backup of a 1 GB database costs, and whether the loop's commits wait for it.

Run:  .venv/bin/python benchmarks/backup.py [--gb 1.0] [--encrypted]

Fills a fresh DuckDB file to about ``--gb`` gigabytes (tasks through the real
store for the schema, then ``INSERT ... SELECT FROM range()`` with a 1 KB hex
string per task that DuckDB's compression cannot shrink much), opens it as the
coordinator does, and takes a snapshot
(:meth:`Store.snapshot`, what ``testfleet backup`` and ``--backup-every`` run)
while another thread commits one small batch after another through the
store's writer, as the loop does under load. Prints the snapshot's time and
size, and the commits' latency before and during the snapshot: the snapshot
is a reader, so the writer is not held and commits go on; what they lose is
the CPU and disk the copy takes. Then restores the snapshot
(``testfleet restore``'s checks) and times that.

Nothing here is asserted; the figures are quoted in the README ("Backups").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import duckdb

from testfleet.domain.enums import TaskStatus
from testfleet.domain.records import TaskRecord, WriteBatch
from testfleet.domain.task import TaskSpec
from testfleet.store import Store
from testfleet.store.encryption import DatabaseKey
from testfleet.store.restore import restore_snapshot

#: Characters of padding per filled task (hex: DuckDB stores it in about half).
PAD = 1024
#: Bytes a filled task takes in the file (measured: 0.48 GB for 817,000 tasks).
BYTES_PER_TASK = 590
KEY = DatabaseKey("benchmark-key-0123456789abcdef", "the benchmark's key")


def task(task_id: str) -> TaskRecord:
    spec = TaskSpec.model_validate({"task_id": task_id, "type": "simulated"})
    now = time.time()
    return TaskRecord(spec=spec, status=TaskStatus.QUEUED, create_time=now, queued_at=now)


def fill(db: Path, gigabytes: float, key: DatabaseKey | None) -> int:
    """Create the schema through the store, then clone its one task ``n`` times; ``n``."""
    rows = int(gigabytes * 1e9 / BYTES_PER_TASK)
    with Store(db, encryption_key=key) as store:
        store.write(WriteBatch(tasks=[task("seed")]))
        # The store's own connection: the schema and (for --encrypted) the key are
        # already in place. Padding: 32 different md5s of each row's number: unique
        # per row, and nothing for DuckDB's compression to find.
        cursor = store._writer  # a benchmark's shortcut: the store has no bulk-clone method
        pad = " || ".join(f"md5(i::VARCHAR || '-{j}')" for j in range(PAD // 32))
        cursor.execute(
            f"""
            INSERT INTO distributed_tasks
            SELECT d.* REPLACE (printf('fill-%09d', i) AS task_id,
                              json_object('pad', {pad}) AS config)
            FROM distributed_tasks d, range({rows}) t(i) WHERE d.task_id = 'seed'
            """
        )
        cursor.execute("CHECKPOINT")
    return rows


def commits(store: Store, stop: threading.Event, latencies: list[float]) -> None:
    """Commit one small batch after another (the loop's turns), timing each."""
    n = 0
    while not stop.is_set():
        batch = WriteBatch(tasks=[task(f"live-{n:06d}-{k}") for k in range(10)])
        started = time.perf_counter()
        store.write(batch)
        latencies.append(time.perf_counter() - started)
        n += 1
        time.sleep(0.005)


def describe(name: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    median = statistics.median(latencies)
    return (
        f"{name:<26} {len(latencies):>6} commits  median {median * 1e3:6.1f} ms"
        f"  p99 {p99 * 1e3:7.1f} ms  max {ordered[-1] * 1e3:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="database size to fill (GB)")
    parser.add_argument("--encrypted", action="store_true", help="an encrypted database")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: temp)")
    args = parser.parse_args()
    key = KEY if args.encrypted else None
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        root = Path(work)
        db, snapshots = root / "fleet.duckdb", root / "snapshots"
        snapshots.mkdir()
        started = time.perf_counter()
        rows = fill(db, args.gb, key)
        print(
            f"filled {db.stat().st_size / 1e9:.2f} GB ({rows:,} tasks) in "
            f"{time.perf_counter() - started:.0f} s; duckdb {duckdb.__version__}, "
            f"{'encrypted' if key else 'plain'}"
        )
        with Store(db, encryption_key=key, snapshot_dir=snapshots, threads=1) as store:
            stop = threading.Event()
            before: list[float] = []
            during: list[float] = []
            writer = threading.Thread(target=commits, args=(store, stop, before))
            writer.start()
            time.sleep(3)
            stop.set()
            writer.join()
            stop = threading.Event()
            writer = threading.Thread(target=commits, args=(store, stop, during))
            writer.start()
            report = store.snapshot("backup.duckdb")
            stop.set()
            writer.join()
        print(
            f"snapshot: {report.seconds:.1f} s, {report.bytes / 1e9:.2f} GB, "
            f"{report.rows['distributed_tasks']:,} tasks"
        )
        print(describe("commits before the backup", before))
        print(describe("commits during the backup", during))
        started = time.perf_counter()
        restored = restore_snapshot(report.path, root / "restored.duckdb", key=key)
        print(
            f"restore (copy, open, checks): {time.perf_counter() - started:.1f} s, "
            f"{restored.rows['distributed_tasks']:,} tasks"
        )


if __name__ == "__main__":
    main()
