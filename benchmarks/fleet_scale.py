"""A thousand workers on one coordinator: connect, idle, answer, dispatch, survive a restart.

Run:  .venv/bin/python benchmarks/fleet_scale.py [--workers 1000] [--hosts 4]
      [--tasks 10000] [--storm-tasks 1000] [--idle-seconds 20]

A real coordinator process (``testfleet coordinator`` via LocalFleet, on
loopback, plain HTTP with a worker token per worker, a fresh DuckDB file)
and ``--hosts`` processes of simulated workers (benchmarks/scale_workers.py:
each worker its own real WebSocket connection, a real hello, heartbeats at
the coordinator's default interval, accepts and answers simulated tasks,
holds results until acknowledged). The worker tokens are written straight
into the database file before the coordinator starts (as the admin token
is): a thousand API calls would measure token creation, not the fleet.

It prints, in order:

* connected workers and the time for all to connect;
* the coordinator's CPU (cores, averaged over ``--idle-seconds`` with every
  worker connected and nothing to run) and RSS per worker (its RSS with the
  fleet connected less its RSS before any worker, over the fleet size),
  read with psutil on the coordinator's pid;
* heartbeat lag p50/p99 over that idle window: the coordinator's own
  ``testfleet_heartbeat_lag_seconds`` histogram (socket read to the loop
  turn applying it), so each figure is a bucket bound ("at most");
* ``/api/v1/health`` latency p50/p99 (``--probes`` sequential GETs) and
  single-task submission latency p50/p99 (``--submits`` POSTs), with the
  fleet connected;
* dispatch: ``--tasks`` zero-work tasks submitted in batches of 1,000, time
  from the first POST to all seen completed, and the tasks/s;
* a reconnect storm: ``--storm-tasks`` tasks (one per worker unless told) of
  ``--storm-duration`` seconds
  are put running on the fleet, the coordinator is killed with SIGKILL
  midway, the workers finish them while it is down (so they hold
  unacknowledged results), it is restarted on the same file and port, and
  every worker reconnects and sends its held results again: time from the
  restart until all workers are connected again and every storm task is
  completed;
* the check: every task submitted in the run has exactly one outcome
  (``task_results.disposition = 'outcome'``) and is completed.

Nothing is asserted but the check; the figures are quoted in the README.
The machine is whatever runs it; say what else was running.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psutil

from testfleet.local_fleet import COORDINATOR, LocalFleet, LocalFleetError
from testfleet.security.tokens import Role, issue_token
from testfleet.store import open_store

HERE = Path(__file__).resolve()


def worker_id(n: int) -> str:
    """The simulated workers' ids: scale_workers.py hosts them in this (sorted) order."""
    return f"scale-{n:05d}"


HEARTBEAT_METRIC = "testfleet_heartbeat_lag_seconds"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def write_worker_tokens(db: Path, count: int, folder: Path) -> Path:
    """A worker token per simulated worker, written into the (stopped) coordinator's
    file in one session; the secrets go to one file (0600) the hosts read."""
    secrets: dict[str, str] = {}
    now = time.time()
    with open_store(db) as store:
        for n in range(count):
            issued = issue_token(worker_id(n), Role.WORKER, now)
            store.add_token(issued.record)
            secrets[worker_id(n)] = issued.secret
    path = folder / "worker-tokens.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(secrets))
    return path


def heartbeat_buckets(metrics_text: str) -> dict[float, float]:
    """Cumulative bucket counts of the heartbeat lag histogram, by upper bound."""
    out: dict[float, float] = {}
    prefix = HEARTBEAT_METRIC + '_bucket{le="'
    for line in metrics_text.splitlines():
        if line.startswith(prefix):
            bound, _, value = line[len(prefix) :].partition('"} ')
            out[float("inf") if bound == "+Inf" else float(bound)] = float(value)
    return out


def bucket_percentile(before: dict[float, float], after: dict[float, float], q: float) -> str:
    """The bucket bound under which ``q`` of the heartbeats between two scrapes fall."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return "no heartbeats"
    for bound, count in zip(bounds, counts, strict=True):
        if count >= q * total:
            return "over 10 s" if bound == float("inf") else f"<= {bound * 1000:g} ms"
    return "?"


class Coordinator:
    """The coordinator process's CPU and memory, through psutil."""

    def __init__(self, fleet: LocalFleet) -> None:
        self.process = psutil.Process(fleet.processes[COORDINATOR].pid)

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=4, help="processes hosting the workers")
    parser.add_argument("--slots", type=int, default=2, help="slots per worker")
    parser.add_argument("--tasks", type=int, default=10_000, help="zero-work tasks dispatched")
    parser.add_argument(
        "--storm-tasks", type=int, help="tasks running at the kill (default: one per worker)"
    )
    parser.add_argument("--storm-duration", type=float, default=6.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--probes", type=int, default=200, help="health GETs")
    parser.add_argument("--submits", type=int, default=50, help="single-task POSTs")
    parser.add_argument("--connect-timeout", type=float, default=600.0)
    parser.add_argument(
        "--py-spy",
        help="a py-spy binary: record the coordinator (each start) into the run's folder",
    )
    args = parser.parse_args()
    if args.storm_tasks is None:
        args.storm_tasks = args.workers
    for name in ("workers", "hosts", "slots", "tasks", "storm_tasks", "probes", "submits"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.storm_tasks > args.workers * args.slots:
        parser.error("--storm-tasks must fit the fleet at once (at most --workers x --slots)")
    # This process and the hosts (they inherit it) hold a socket per worker.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < args.workers + 512:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.workers * 2 + 512), hard))

    workdir = Path(tempfile.mkdtemp(prefix="testfleet-scale-"))
    fleet = LocalFleet(workdir, db=workdir / "scale.duckdb", log_dir=workdir, client_timeout=120)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    say(
        f"fleet_scale: {args.workers} simulated workers in {args.hosts} processes, "
        f"{args.slots} slots each, plain HTTP with worker tokens, {os.cpu_count()} cores"
    )
    submitted: list[str] = []
    profilers: list[subprocess.Popen[bytes]] = []

    def profile() -> None:
        """Attach py-spy to the coordinator just started (it stops when that process ends)."""
        if args.py_spy:
            pid = fleet.processes[COORDINATOR].pid
            out = workdir / f"coordinator-{len(profilers) + 1}.pyspy"
            argv = [args.py_spy, "record", "-r", "50", "-f", "raw", "-p", str(pid), "-o", str(out)]
            profilers.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    try:
        _ = fleet.token  # the admin token, written into the new file
        tokens = write_worker_tokens(fleet.db, args.workers, workdir)
        fleet.start_coordinator()
        profile()
        coordinator = Coordinator(fleet)
        rss_before = coordinator.rss()
        per_host = -(-args.workers // args.hosts)
        started = time.perf_counter()
        for h in range(args.hosts):
            first = h * per_host
            count = min(per_host, args.workers - first)
            if count <= 0:
                break
            argv = [
                sys.executable,
                str(HERE.parent / "scale_workers.py"),
                fleet.url,
                str(first),
                str(count),
                str(args.slots),
                str(tokens),
            ]
            fleet.start(f"workers-{h}", argv, with_credentials=False)
        fleet.wait_for_workers(count=args.workers, timeout=args.connect_timeout)
        connect_seconds = time.perf_counter() - started
        client = fleet.client
        say(f"  connected: {len(connected(client))} workers in {connect_seconds:.1f} s")

        http = httpx.Client(
            base_url=fleet.url, headers={"Authorization": f"Bearer {fleet.token}"}, timeout=60
        )
        time.sleep(min(5.0, args.idle_seconds))  # the last hellos' turns settle
        lags_before = heartbeat_buckets(http.get("/metrics").text)
        cpu_before = coordinator.cpu_seconds()
        idle_started = time.perf_counter()
        time.sleep(args.idle_seconds)
        idle = time.perf_counter() - idle_started
        cores = (coordinator.cpu_seconds() - cpu_before) / idle
        lags_after = heartbeat_buckets(http.get("/metrics").text)
        rss = coordinator.rss()
        say(
            f"  coordinator idle with the fleet connected: {cores:.2f} cores over {idle:.0f} s; "
            f"RSS {rss / 2**20:.0f} MiB, {(rss - rss_before) / args.workers / 1024:.0f} KiB "
            "per worker"
        )
        say(
            f"  heartbeat lag (socket read -> loop turn), idle window: "
            f"p50 {bucket_percentile(lags_before, lags_after, 0.5)}, "
            f"p99 {bucket_percentile(lags_before, lags_after, 0.99)} "
            f"({lags_after.get(float('inf'), 0) - lags_before.get(float('inf'), 0):.0f} "
            "heartbeats)"
        )

        health = []
        for _ in range(args.probes):
            t = time.perf_counter()
            response = http.get("/api/v1/health")
            health.append((time.perf_counter() - t) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"health answered {response.status_code}: {response.text}")
            time.sleep(0.02)
        submits = []
        for n in range(args.submits):
            task_id = f"single-{n:04d}"
            t = time.perf_counter()
            client.submit([{"task_id": task_id, "type": "simulated"}])
            submits.append((time.perf_counter() - t) * 1000)
            submitted.append(task_id)
            time.sleep(0.05)
        say(
            f"  /api/v1/health: p50 {statistics.median(health):.1f} ms, "
            f"p99 {percentile(health, 0.99):.1f} ms ({args.probes} GETs); "
            f"single-task submit: p50 {statistics.median(submits):.1f} ms, "
            f"p99 {percentile(submits, 0.99):.1f} ms ({args.submits} POSTs)"
        )

        documents = [{"task_id": f"noop-{n:06d}", "type": "simulated"} for n in range(args.tasks)]
        lags_before = heartbeat_buckets(http.get("/metrics").text)
        t = time.perf_counter()
        for start in range(0, len(documents), 1000):
            client.submit(documents[start : start + 1000])
        submitted += [d["task_id"] for d in documents]
        wait_completed(client, len(submitted), timeout=600)
        dispatch = time.perf_counter() - t
        lags_after = heartbeat_buckets(http.get("/metrics").text)
        say(
            f"  dispatch: {args.tasks:,} zero-work tasks in {dispatch:.2f} s "
            f"({args.tasks / dispatch:,.0f} tasks/s, first POST -> all seen completed); "
            f"heartbeat lag meanwhile p50 {bucket_percentile(lags_before, lags_after, 0.5)}, "
            f"p99 {bucket_percentile(lags_before, lags_after, 0.99)}"
        )

        storm: list[dict[str, Any]] = [
            {
                "task_id": f"storm-{n:05d}",
                "type": "simulated",
                "config": {"duration_seconds": args.storm_duration},
            }
            for n in range(args.storm_tasks)
        ]
        for start in range(0, len(storm), 1000):
            client.submit(storm[start : start + 1000])
        submitted += [d["task_id"] for d in storm]
        storm_started = time.perf_counter()
        wait_until(lambda: client.stats()["tasks"].get("running", 0) >= args.storm_tasks, 120)
        # Kill it while every storm task runs; the workers finish them while
        # it is down and hold the results.
        time.sleep(max(0.0, args.storm_duration / 2 - (time.perf_counter() - storm_started)))
        http.close()
        fleet.close_client()
        fleet.send_signal(COORDINATOR, signal.SIGKILL)
        fleet.processes[COORDINATOR].wait(30)
        killed = time.perf_counter()
        time.sleep(args.storm_duration)  # every storm task has finished on its worker
        restarted = time.perf_counter()
        fleet.start_coordinator(wait=False)
        profile()
        fleet.wait_healthy()
        healthy = time.perf_counter()
        client = fleet.client
        fleet.wait_for_workers(count=args.workers, timeout=args.connect_timeout)
        all_back = time.perf_counter()
        wait_completed(client, len(submitted), timeout=600)
        settled = time.perf_counter()
        say(
            f"  reconnect storm: coordinator SIGKILLed with {args.storm_tasks} tasks running, "
            f"down {restarted - killed:.1f} s while they finished; after the restart "
            f"(healthy in {healthy - restarted:.1f} s) all {args.workers} workers were back in "
            f"{all_back - restarted:.1f} s and every task completed in "
            f"{settled - restarted:.1f} s"
        )
    except LocalFleetError as exc:
        raise SystemExit(f"{exc}\nlogs in {workdir}") from None
    finally:
        host_counts = stop_fleet(fleet)
    for profiler in profilers:
        profiler.wait(60)
    say(f"  worker processes: {json.dumps(host_counts)}")
    if args.py_spy:
        say(f"  coordinator profiles (py-spy raw): {workdir}/coordinator-*.pyspy")
    return check(fleet.db, submitted, say)


def connected(client: Any) -> list[dict[str, Any]]:
    return [w for w in client.workers() if w["connected"]]


def wait_until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s")
        time.sleep(0.25)


def wait_completed(client: Any, count: int, timeout: float) -> None:
    wait_until(lambda: client.stats()["tasks"].get("completed", 0) >= count, timeout)


def stop_fleet(fleet: LocalFleet) -> dict[str, int]:
    """Stop the hosts (each prints its counts) and the coordinator; the summed counts."""
    totals: dict[str, int] = {}
    for name in [n for n in fleet.processes if n.startswith("workers-")]:
        try:
            fleet.stop(name, grace=30)
        except LocalFleetError:
            continue
        last = fleet.tail(name).strip().splitlines()
        if last and last[-1].startswith("{"):
            for key, value in json.loads(last[-1]).items():
                totals[key] = totals.get(key, 0) + int(value)
    try:
        fleet.stop_all(grace=30)
    finally:
        fleet.close()
    return totals


def check(db: Path, submitted: list[str], say: Any) -> int:
    """Every submitted task completed, with exactly one outcome; 0 if so, 1 if not."""
    con = duckdb.connect(str(db), read_only=True)
    con.execute("CREATE TEMP TABLE wanted (task_id VARCHAR)")
    con.executemany("INSERT INTO wanted VALUES (?)", [(t,) for t in submitted])
    rows = con.execute(
        """
        SELECT w.task_id, t.status,
               (SELECT count(*) FROM task_results r
                 WHERE r.task_id = w.task_id AND r.disposition = 'outcome') AS outcomes
        FROM wanted w LEFT JOIN distributed_tasks t USING (task_id)
        """
    ).fetchall()
    late = con.execute(
        "SELECT count(*) FROM task_results r JOIN wanted w USING (task_id) "
        "WHERE r.disposition <> 'outcome'"
    ).fetchone()
    con.close()
    bad = [(task, status, n) for task, status, n in rows if status != "completed" or n != 1]
    say(
        f"  check: {len(rows):,} tasks submitted, {len(rows) - len(bad):,} completed with "
        f"exactly one outcome; {late[0] if late else 0} other results kept (late or retried)"
    )
    for task, status, n in bad[:10]:
        say(f"    LOST OR DOUBLED: {task} status {status} outcomes {n}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
