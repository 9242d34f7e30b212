"""The dashboard's pages at scale: 100,000 tasks and 1,000,000 test results.

Run:  .venv/bin/python benchmarks/dashboard_pages.py [--tasks 100000] [--tests 1000000]

Fills a fresh DuckDB file, starts a coordinator on it (``LocalFleet``, no
workers: the pages read the state the coordinator loaded and the store),
signs in through the dashboard's form (its cookie carries every request) and
times each page (the Test runs and Tests pages too), row fragment and the
chart history, plus the API's task list for comparison: the median of
``--repeat`` requests each, measured from the client (so it includes HTTP and
rendering, on loopback). Prints a table; the issue's bar is 300 ms a page.

How the file is filled quickly: ``api_seed.seed_store`` (the API tests' seed)
writes one of every kind of row through the real store, so every JSON
document is one the coordinator itself wrote and reads back; then bulk
``INSERT ... SELECT FROM range()`` statements clone those rows, with new ids
and times, in DuckDB itself:

* 50 workers (``w-000`` ...);
* tasks ``t-000000`` ...: one in ten a pytest chunk (``test``), one in ten
  failed, one in a hundred still queued, the rest completed, created 1.5 s
  apart ending now (so the last hour's chart has points);
* the seeded task's attempts and results per finished task (a completed one
  was retried once: two of each);
* 100 test results per chunk (10,000 chunks: 1,000,000 rows), 100 chunks a run.

Nothing here is asserted; the figures are quoted in the README.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx

from testfleet.local_fleet import LocalFleet

HERE = Path(__file__).resolve()
# The API tests' seed: one row of every kind, written by the real store.
sys.path.insert(0, str(HERE.parents[1] / "tests" / "unit" / "coordinator"))
from api_seed import seed_store  # noqa: E402

WORKERS = 50
TESTS_PER_CHUNK = 100
CHUNKS_PER_RUN = 100


def fill(path: Path, tasks: int, tests: int) -> None:
    """Write the rows the module docstring lists into a new file at ``path``."""
    seed_store(path)
    now_us = int(time.time() * 1_000_000)
    con = duckdb.connect(str(path))
    chunks = tests // TESTS_PER_CHUNK
    if chunks > tasks // 10:
        raise SystemExit(f"--tests {tests} needs at least {chunks * 10} tasks (one in ten a chunk)")
    con.execute("BEGIN")
    # BY NAME: the copies' columns are matched by name, whatever their order.
    con.execute(
        "INSERT INTO worker_nodes BY NAME SELECT w.* REPLACE (printf('w-%03d', i) AS worker_id) "
        "FROM worker_nodes w, range(?) r(i) WHERE w.worker_id = 'gpu-box-1'",
        [WORKERS],
    )
    # Which seeded task each new one copies, and when it was made.
    con.execute(
        "CREATE TEMP TABLE plan AS SELECT i, printf('t-%06d', i) AS task_id, "
        "CASE WHEN i % 100 = 99 THEN 'queued-1' WHEN i % 10 = 0 THEN 'chunk-1' "
        "WHEN i % 10 = 1 THEN 'failed-1' ELSE 'completed-1' END AS template, "
        "printf('w-%03d', i % ?) AS worker, printf('run-%03d', (i // 10) // ?) AS run_id, "
        "make_timestamp(? - (? - i) * 1500000) AS created "
        "FROM range(?) r(i)",
        [WORKERS, CHUNKS_PER_RUN, now_us, tasks, tasks],
    )
    con.execute(
        "INSERT INTO distributed_tasks BY NAME SELECT t.* REPLACE ("
        "p.task_id AS task_id, p.created AS create_time, p.created AS queued_at, "
        "CASE WHEN t.start_time IS NULL THEN NULL ELSE p.created + INTERVAL 1 SECOND END "
        "AS start_time, "
        "CASE WHEN t.end_time IS NULL THEN NULL ELSE p.created + INTERVAL 2 SECOND END "
        "AS end_time, "
        "CASE WHEN t.worker_id IS NULL THEN NULL ELSE p.worker END AS worker_id, "
        "CASE WHEN t.attempts = 0 THEN NULL ELSE 100 + p.i * 4 + t.attempts END "
        "AS current_attempt_id, "
        "replace(t.config, '\"run-1\"', '\"' || p.run_id || '\"') AS config) "
        "FROM plan p JOIN distributed_tasks t ON t.task_id = p.template",
    )
    con.execute(
        "INSERT INTO task_execution_history BY NAME SELECT h.* REPLACE ("
        "100 + p.i * 4 + h.attempt AS id, p.task_id AS task_id, p.worker AS worker_id, "
        "p.created + INTERVAL 1 SECOND AS start_time, "
        "p.created + INTERVAL 1 SECOND AS accepted_time, "
        "p.created + INTERVAL 2 SECOND AS end_time) "
        "FROM plan p JOIN task_execution_history h ON h.task_id = p.template",
    )
    con.execute(
        "INSERT INTO task_results BY NAME SELECT r.* REPLACE ("
        "100 + p.i * 4 + h.attempt AS attempt_id, p.task_id AS task_id, "
        "p.worker AS worker_id, "
        "p.created + INTERVAL 2 SECOND AS received_time, "
        "replace(r.result, p.template, p.task_id) AS result) "
        "FROM plan p JOIN task_results r ON r.task_id = p.template "
        "JOIN task_execution_history h ON h.id = r.attempt_id",
    )
    con.execute(
        "INSERT INTO test_results BY NAME SELECT s.* REPLACE ("
        "row_number() OVER () + 1 AS seq, p.task_id AS task_id, "
        "printf('t.py::test_%03d', n) AS nodeid, 101 + p.i * 4 AS attempt_id, "
        "p.worker AS worker_id, p.run_id AS run_id, "
        "p.created + INTERVAL 2 SECOND AS recorded_time, "
        "replace(s.record, 't.py::a', printf('t.py::test_%03d', n)) AS record) "
        "FROM plan p JOIN test_results s ON s.task_id = p.template, range(?) k(n) "
        "WHERE p.i < ?",
        [TESTS_PER_CHUNK, chunks * 10],
    )
    con.execute("COMMIT")
    counts = con.execute(
        "SELECT (SELECT count(*) FROM distributed_tasks), "
        "(SELECT count(*) FROM task_execution_history), (SELECT count(*) FROM task_results), "
        "(SELECT count(*) FROM test_results)"
    ).fetchone()
    con.close()
    print(f"filled: tasks, attempts, results, test results = {counts}", flush=True)


def timed(client: httpx.Client, path: str, repeat: int, headers: dict[str, str]) -> list[float]:
    """``repeat`` requests of ``path`` (after one to warm caches); each one's milliseconds."""
    times = []
    for n in range(repeat + 1):
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
        if n:
            times.append(elapsed)
    return times


def pages(tasks: int) -> list[tuple[str, str]]:
    """What is timed: (name, path); the task and run asked for exist in a file of ``tasks``."""
    chunk = tasks // 2 // 10 * 10  # a multiple of ten: a pytest chunk (see ``fill``)
    run = f"run-{chunk // 10 // CHUNKS_PER_RUN:03d}"
    return [
        ("Overview", "/dashboard/"),
        ("Workers", "/dashboard/workers"),
        ("Workers rows (fragment)", "/dashboard/workers/rows?state=idle"),
        ("A worker", "/dashboard/workers/w-007"),
        ("Tasks", "/dashboard/tasks"),
        ("Tasks ?status=failed", "/dashboard/tasks?status=failed"),
        ("Tasks ?status=queued", "/dashboard/tasks?status=queued"),
        ("Tasks ?type=test", "/dashboard/tasks?type=test"),
        ("Tasks ?worker=w-007", "/dashboard/tasks?worker=w-007"),
        ("Tasks ?priority=1", "/dashboard/tasks?priority=1"),
        (f"Tasks ?run={run}", f"/dashboard/tasks?run={run}"),
        ("Tasks rows ?status=failed", "/dashboard/tasks/rows?status=failed"),
        ("A task (chunk)", f"/dashboard/tasks/t-{chunk:06d}"),
        ("A task (failed)", f"/dashboard/tasks/t-{chunk + 1:06d}"),
        ("Chart history (JSON)", "/dashboard/history"),
        ("Test runs", "/dashboard/runs"),
        (f"A test run ({run}, finished)", f"/dashboard/runs/{run}"),
        ("A test run's body (fragment)", f"/dashboard/runs/{run}/live"),
        ("Tests", "/dashboard/tests"),
        ("Tests ?q=test_04", "/dashboard/tests?q=test_04"),
        # Both read the regression detector's samples, test durations included.
        ("Benchmarks", "/dashboard/benchmarks"),
        ("Alerts", "/dashboard/alerts"),
        ("API GET /api/v1/tasks", "/api/v1/tasks"),
        ("API GET /api/v1/tasks?status=failed", "/api/v1/tasks?status=failed&limit=200"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--tests", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7, help="requests per page (median)")
    parser.add_argument("--keep", action="store_true", help="keep the folder (the filled file)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="testfleet-pages-"))
    db = workdir / "pages.duckdb"
    started = time.perf_counter()
    fill(db, args.tasks, args.tests)
    print(f"fill took {time.perf_counter() - started:.1f} s", flush=True)
    fleet = LocalFleet(workdir, db=db, log_dir=workdir, client_timeout=120)
    try:
        fleet.start_coordinator()
        fleet.wait_healthy(timeout=300)
        with httpx.Client(base_url=fleet.url, timeout=120) as client:
            signed_in = client.post(
                "/dashboard/login", data={"token": fleet.token}, follow_redirects=False
            )
            if signed_in.status_code != 303 or not client.cookies:
                raise SystemExit(f"sign-in failed: {signed_in.status_code} {signed_in.text[:300]}")
            html = {"Accept": "text/html"}
            api = {"Authorization": f"Bearer {fleet.token}"}
            print(
                f"{args.tasks:,} tasks, {args.tests:,} test results, {os.cpu_count()} cores; "
                f"median of {args.repeat} requests each, client side (ms)"
            )
            print(f"{'page':40} {'median':>8} {'min':>8} {'max':>8}")
            for name, path in pages(args.tasks):
                times = timed(client, path, args.repeat, api if path.startswith("/api") else html)
                flag = "  > 300 ms" if statistics.median(times) > 300 else ""
                print(
                    f"{name:40} {statistics.median(times):8.1f} {min(times):8.1f} "
                    f"{max(times):8.1f}{flag}",
                    flush=True,
                )
    finally:
        try:
            fleet.stop_all(grace=30)
        finally:
            fleet.close()
    if args.keep:
        print(f"kept {workdir}")


if __name__ == "__main__":
    main()
