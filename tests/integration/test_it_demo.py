"""``testfleet demo`` runs its example batch to the end and leaves a DuckDB file to inspect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from it_fleet import tail

from testfleet.cli.demo import (
    backend_task,
    benchmark_task,
    demo_backends,
    example_batch,
    missing_hardware,
)
from testfleet.store import Store
from testfleet.worker.executors.registry import benchmarks_available

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(300)
def test_demo_runs_the_example_batch_and_leaves_the_file(tmp_path: Path):
    db = tmp_path / "d.duckdb"
    missing = missing_hardware()
    unschedulable_id = f"demo-needs-{missing.value}"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-m", "testfleet", "demo", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    logs = "\n".join(f"--- {p.name}\n{tail(p)}" for p in sorted((tmp_path / "logs").glob("*.log")))
    context = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\nlogs:\n{logs}"
    assert done.returncode == 0, context
    summary = done.stdout
    assert "unschedulable" in summary, context
    assert f"{unschedulable_id} is unschedulable" in summary, context
    unschedulable_line = next(
        line for line in summary.splitlines() if f"{unschedulable_id} is unschedulable" in line
    )
    assert missing.value in unschedulable_line, context
    assert "fleet stopped cleanly" in summary, context
    # Over TLS with worker certificates, its CA, certificates and token in its folder,
    # and the printout says how to reach it from another shell.
    assert "coordinator on https://127.0.0.1:" in summary, context
    assert "TESTFLEET_COORDINATOR=https://127.0.0.1:" in summary, context
    assert "TESTFLEET_CA=pki/ca.pem" in summary, context
    assert "TESTFLEET_TOKEN_FILE=admin.token" in summary, context
    for made in ("pki/ca.pem", "pki/server.pem", "pki/workers/demo-worker-1.pem", "admin.token"):
        assert (tmp_path / made).is_file(), made
    assert "--client-ca" in (tmp_path / "logs" / "coordinator.log").read_text(), context
    # The pytest run across the same workers: pytest's own summary line.
    assert "1 failed, 33 passed, 1 skipped" in done.stdout, context
    # The suite sees its own plugins only: none of the environment's warns
    # (a development install has pytest-asyncio, whose unset loop scope warns).
    suite_part = done.stdout.partition("pytest suite")[2].partition("testfleet run exited")[0]
    assert suite_part, context
    assert "Warning" not in suite_part + done.stderr, context
    assert "testfleet run exited 1" in summary, context

    expected = {t["task_id"]: t for t in example_batch(missing)}
    bench_id = benchmark_task()["task_id"]
    if benchmarks_available():
        expected[bench_id] = benchmark_task()
        assert "benchmarking bert-base-uncased (2 layers) on a quiet worker" in summary, context
        # The cross-backend comparison (issue 15): the same model on each other backend
        # this machine has, printed as results compare's backends table.
        for kind in demo_backends():
            expected[backend_task(kind)["task_id"]] = backend_task(kind)
        if demo_backends():
            assert "backends side by side" in summary, context
    backend_ids = [backend_task(kind)["task_id"] for kind in demo_backends()]
    with Store(db) as store:
        everything = store.list_tasks(limit=1000)
        tasks = {t.spec.task_id: t for t in everything if t.spec.type.value != "test"}
        test_rows = store.run_test_rows(
            next(t.spec.config["run_id"] for t in everything if t.spec.type.value == "test")
        )
        assert len(test_rows) == 35
        assert set(tasks) == set(expected)
        for task_id, task in tasks.items():
            if task_id == unschedulable_id:
                assert task.status.value == "queued"
                # The reason that was true while workers were connected is kept
                # after the demo stopped them, saying that none are left.
                reason = task.unschedulable_reason
                assert reason is not None
                assert f"hardware: needs one of [{missing.value}]" in reason, reason
                assert reason.endswith("no workers are connected now"), reason
                assert store.get_attempts(task_id) == []
                continue
            assert task.status.is_terminal, (task_id, task.status)
            counted = store.get_counted_result(task_id)
            assert counted is not None, task_id
            assert counted.result.simulation_status.is_simulated is (
                task.spec.type.value == "simulated"
            )

        gives_up = tasks["demo-fails-then-gives-up"]
        assert gives_up.status.value == "failed"
        assert gives_up.attempts == 2
        history = store.get_attempts("demo-fails-then-gives-up")
        assert [a.status.value for a in history] == ["failed", "failed"]
        assert {a.error_class.value for a in history if a.error_class} == {"task_failure"}
        results = store.get_results("demo-fails-then-gives-up")
        assert [r.counted for r in results] == [False, True]
        assert [r.disposition.value for r in results] == ["retried", "outcome"]
        assert results[-1].result.results["exit_code"] == 3

        times_out = tasks["demo-times-out"]
        assert times_out.status.value == "timed_out"
        assert times_out.error_class is not None
        assert times_out.error_class.value == "timeout"

        for task_id in ("demo-python-version", "demo-rack-b-only", "demo-sha256-0"):
            assert tasks[task_id].status.value == "completed", task_id
        assert tasks["demo-rack-b-only"].worker_id == "demo-worker-3"
        simulated = [t for t in tasks.values() if t.spec.type.value == "simulated"]
        assert len(simulated) == 10
        assert {t.status.value for t in simulated} == {"completed"}

        if benchmarks_available():
            # Timed alone: it started after every other task of the batch had ended.
            (bench_attempt,) = store.get_attempts(bench_id)
            others_ended = max(
                a.end_time or 0.0
                for task_id in expected
                if task_id not in (bench_id, unschedulable_id, *backend_ids)
                for a in store.get_attempts(task_id)
            )
            assert bench_attempt.start_time >= others_ended
            assert store.get_benchmark_rows(bench_id)
            for kind in demo_backends():
                rows = store.get_benchmark_rows(backend_task(kind)["task_id"])
                assert rows, kind
                assert {row.backend for row in rows} == {kind.value}
                assert {row.output_check for row in rows} == {"passed"}, rows

        workers = {w.worker_id: w for w in store.list_workers()}
        assert set(workers) == {"demo-worker-1", "demo-worker-2", "demo-worker-3"}
        # (How a stopped worker is recorded is test_it_worker_loss's business.)
