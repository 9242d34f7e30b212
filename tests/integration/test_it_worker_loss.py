"""A worker killed with SIGKILL mid-task: the task is requeued and completes elsewhere."""

from __future__ import annotations

import signal
import sys

import pytest
from it_fleet import pid_alive

from testfleet.worker.transports import Transport

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Attempt 1 writes its pid to a marker file and hangs; any later attempt
# finishes at once. Each attempt also leaves a "done" marker when it ends.
SCRIPT = """
import os, pathlib, sys, time
marker_dir = pathlib.Path(sys.argv[1])
attempt = os.environ["TESTFLEET_ATTEMPT"]
worker = os.environ["TESTFLEET_WORKER_ID"]
if attempt == "1":
    (marker_dir / "started-1").write_text(f"{os.getpid()} {worker}")
    time.sleep(60)
(marker_dir / f"done-{attempt}").write_text(worker)
print(f"attempt {attempt} done on {worker}")
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", list(Transport))
def test_killed_worker_is_declared_lost_and_its_task_completes_on_the_other(fleet, tmp_path):
    fleet.start_coordinator()
    processes = {
        worker_id: fleet.start_worker(worker_id, slots=1, wait=False)
        for worker_id in ("loss-a", "loss-b")
    }
    fleet.wait_for_workers(list(processes))

    markers = tmp_path / "markers"
    markers.mkdir()
    (task_id,) = fleet.client.submit(
        {
            "task_id": "survives-worker-loss",
            "type": "command",
            "config": {"argv": [sys.executable, "-c", SCRIPT, str(markers)]},
            "timeout_seconds": 300,
        }
    )
    started = markers / "started-1"
    fleet.wait_until(started.exists, 60, "attempt 1 to start and write its marker")
    orphan_pid = int(started.read_text().split()[0])
    fleet.extra_pids.add(orphan_pid)  # the killed worker cannot stop it; we do, at the end

    detail = fleet.task(task_id)
    assert detail["task"]["status"] in ("assigned", "running")
    assert detail["task"]["attempts"] == 1
    victim = detail["task"]["worker_id"]
    assert victim == started.read_text().split()[1]
    (other,) = set(processes) - {victim}

    fleet.send_signal(processes[victim], signal.SIGKILL)

    def victim_lost() -> bool:
        workers = {w["worker_id"]: w for w in fleet.client.workers()}
        return workers[victim]["status"] == "lost"

    fleet.wait_until(victim_lost, 60, f"worker {victim} to be declared lost")
    (final,) = fleet.wait_terminal([task_id], timeout=90).values()
    assert final["status"] == "completed"
    assert final["attempts"] == 2
    assert final["worker_id"] == other

    detail = fleet.task(task_id)
    first, second = detail["attempts"]
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["worker_id"] == victim
    assert first["status"] == "lost"
    assert first["error_class"] == "worker_lost"
    assert first["end_time"] is not None
    assert second["worker_id"] == other
    assert second["status"] == "completed"

    result = detail["result"]
    assert result is not None
    assert result["attempt_id"] == second["attempt_id"]
    assert result["worker_id"] == other
    assert result["counted"] is True
    assert result["results"]["exit_code"] == 0
    assert f"attempt 2 done on {other}" in result["results"]["output_tail"]
    # Only the second attempt ever reported: the killed worker's child did not.
    assert [r["attempt_id"] for r in detail["results"]] == [second["attempt_id"]]
    assert (markers / "done-2").read_text() == other
    assert not (markers / "done-1").exists(), "the orphaned first attempt finished?"

    workers = {w["worker_id"]: w for w in fleet.client.workers()}
    assert workers[victim]["status"] == "lost"
    assert workers[victim]["connected"] is False
    assert workers[other]["status"] == "connected"

    # The killed worker could not end attempt 1's process, but its orphan guard
    # did, at once (issue 12): it did not run on beside its retry.
    fleet.wait_until(lambda: not pid_alive(orphan_pid), 30, "the orphaned attempt 1 to end")
    # Restarted on the same machine and work directory, the worker rejoins under its id.
    fleet.start_worker(victim, slots=1)
    workers = {w["worker_id"]: w for w in fleet.client.workers()}
    assert workers[victim]["status"] == "connected"

    fleet.stop_all()
    with fleet.open_store() as store:
        task = store.get_task(task_id)
        assert task is not None
        assert task.status.value == "completed"
        assert task.lost_attempts == 1
        history = store.get_attempts(task_id)
        assert [(a.attempt, a.worker_id, a.status.value) for a in history] == [
            (1, victim, "lost"),
            (2, other, "completed"),
        ]
        assert history[0].error_class is not None
        assert history[0].error_class.value == "worker_lost"
        assert task.current_attempt_id == history[1].attempt_id
        counted = store.get_counted_result(task_id)
        assert counted is not None
        assert counted.attempt_id == history[1].attempt_id
        assert counted.worker_id == other
        stored_workers = {w.worker_id: w.status.value for w in store.list_workers()}
        assert stored_workers[victim] == "left"  # it rejoined above, then stopped cleanly
    if pid_alive(orphan_pid):
        # Still sleeping in attempt 1: it certainly did not complete the task.
        assert not (markers / "done-1").exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", list(Transport))
def test_a_worker_stopped_with_sigterm_leaves_and_is_not_lost(fleet):
    """A clean stop (SIGTERM: the agent says bye) is "left", not a crash to recover from."""
    fleet.start_coordinator()
    process = fleet.start_worker("leaves-cleanly", slots=1)
    (task_id,) = fleet.client.submit(
        {"task_id": "before-leaving", "type": "simulated", "config": {"duration_seconds": 0}}
    )
    fleet.wait_terminal([task_id])

    assert fleet.stop(process) == 0

    def gone() -> dict | None:
        (worker,) = [w for w in fleet.client.workers() if w["worker_id"] == "leaves-cleanly"]
        return worker if not worker["connected"] else None

    worker = fleet.wait_until(gone, 60, "the stopped worker's socket to close")
    assert worker["status"] == "left", worker
    fleet.stop_all()
    with fleet.open_store() as store:
        (stored,) = store.list_workers()
        assert stored.status.value == "left"
