"""Issue 12's last gaps, with real processes on loopback: a ``testfleet run`` that
starts before any worker is connected waits for one (and says so) instead of
failing at once; and a test run's declared memory binds the pytest process
that runs its tests, so the chunk of a test past it is reported as an
out-of-memory failure while the other tests pass and the worker lives."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from it_fleet import Fleet

pytestmark = [pytest.mark.integration]

RUN_TIMEOUT = 180


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def start_run(fleet: Fleet, project: Path, output: Path, *args: str) -> subprocess.Popen[bytes]:
    """``testfleet run ARGS`` in ``project`` in the background, its output in a file."""
    with output.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "testfleet", "run", "--coordinator", fleet.url, *args],
            cwd=project,
            env=fleet.env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.timeout(240)
def test_a_run_started_before_its_workers_waits_for_them(fleet: Fleet, tmp_path: Path) -> None:
    project = write(tmp_path / "project", {"tests/test_a.py": "def test_a():\n    pass\n"})
    fleet.start_coordinator()
    output = tmp_path / "run.out"
    run = start_run(fleet, project, output, "--run-id", "early1", "tests")
    try:
        # The run is waiting (it has said so) before any worker exists.
        fleet.wait_until(
            lambda: "waiting up to 60 s for a worker" in output.read_text(),
            what="the run to say it waits for a worker",
        )
        assert run.poll() is None
        fleet.start_worker("late")
        code = run.wait(RUN_TIMEOUT)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    text = output.read_text()
    assert code == 0, text
    assert "1 worker(s) ready after" in text
    assert "1 passed" in text


@pytest.mark.timeout(120)
def test_a_run_with_no_worker_fails_after_the_wait_with_a_clear_message(
    fleet: Fleet, tmp_path: Path
) -> None:
    project = write(tmp_path / "project", {"tests/test_a.py": "def test_a():\n    pass\n"})
    fleet.start_coordinator()
    output = tmp_path / "run.out"
    run = start_run(fleet, project, output, "--wait-for-workers", "1", "tests")
    code = run.wait(RUN_TIMEOUT)
    text = output.read_text()
    assert code == 4, text  # pytest's usage error, as other run set-up failures
    assert "no connected worker takes test tasks after waiting 1 s (--wait-for-workers)" in text
    assert "Traceback" not in text


@pytest.mark.timeout(240)
def test_a_test_past_the_runs_memory_limit_fails_its_chunk_as_out_of_memory(
    fleet: Fleet, tmp_path: Path
) -> None:
    project = write(
        tmp_path / "project",
        {
            "tests/test_memory.py": """
                import os, resource

                def test_small_first():
                    assert sum(range(1000)) == 499500

                def test_past_the_limit():
                    # The session process runs with the chunk's limit: 512 MiB at
                    # once is refused (rlimit) or killed (cgroup).
                    block = bytearray(512 * 1024 * 1024)
                    assert len(block)

                def test_small_last():
                    # Held to the limit too (the session, not just the chunk's call).
                    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
                    assert soft == 256 * 1024 * 1024, soft
            """
        },
    )
    fleet.start_coordinator()
    fleet.start_worker("w1")
    output = tmp_path / "run.out"
    run = start_run(fleet, project, output, "--run-id", "mem1", "--memory", "256MiB", "tests")
    code = run.wait(RUN_TIMEOUT)
    text = output.read_text()
    assert code == 1, text
    assert "1 failed, 2 passed" in text, text
    assert "test_past_the_limit" in text
    chunks = [t for t in fleet.client.list_tasks()["tasks"] if t["task_id"].startswith("mem1.r0.")]
    failed = [t for t in chunks if t["status"] == "failed"]
    assert len(failed) == 1, chunks  # only the chunk of the test past the limit
    (chunk,) = failed
    assert chunk["error"]["error_class"] == "out_of_memory", chunk
    assert "tests/test_memory.py::test_past_the_limit" in chunk["error"]["message"]
    assert "memory limit of 256 MiB" in chunk["error"]["message"]
    for task in chunks:
        full = fleet.client.get_task(task["task_id"])["task"]
        assert full["requirements"]["resources"]["memory_bytes"] == 256 * 1024 * 1024
    # The worker lives and is still connected.
    (worker,) = fleet.client.workers()
    assert worker["connected"], worker


@pytest.mark.timeout(180)
def test_a_coordinator_restart_is_logged_by_the_worker_at_info(fleet: Fleet) -> None:
    fleet.start_coordinator()
    fleet.start_worker("w1")
    # The coordinator lists a worker before the worker has read its welcome; a
    # 1012 in between is a refused attempt (also INFO), not a restart of a session.
    fleet.wait_until(
        lambda: "w1: connected to" in fleet.tail("w1"), what="the worker to read its welcome"
    )
    assert fleet.stop("coordinator") == 0  # SIGTERM: the worker channel closes with 1012
    fleet.start_coordinator()
    fleet.wait_for_workers(["w1"], timeout=90)
    log = fleet.tail("w1")
    assert "coordinator restarting; reconnecting to" in log, log
    assert "lost the connection" not in log, log
