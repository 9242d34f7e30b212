"""Issue 12, worker side, with real processes on loopback: a worker's SIGTERM
hands unfinished work back at once; a worker's SIGKILL leaves no task process
running, not even one that left the task's process group."""

from __future__ import annotations

import signal
import sys
import time

import pytest
from it_fleet import pid_alive

from testfleet.local_fleet import WorkerOptions
from testfleet.worker.transports import Transport

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Attempt 1 of the "long" task runs until it is stopped; of the "short" one,
# until the test opens the gate. Any later attempt finishes at once.
SCRIPT = """
import os, pathlib, sys, time
markers, name = pathlib.Path(sys.argv[1]), sys.argv[2]
attempt = os.environ["TESTFLEET_ATTEMPT"]
(markers / f"started-{name}-{attempt}").write_text(os.environ["TESTFLEET_WORKER_ID"])
if attempt == "1":
    gate = markers / "gate"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (name == "short" and gate.exists()):
        time.sleep(0.05)
print(f"{name} attempt {attempt} done")
"""

# Starts a child that leaves the group (setsid) and a double-forked one, writes
# the three pids, and runs until killed.
ESCAPING = """
import os, pathlib, subprocess, sys, time
pids = [os.getpid()]
pids.append(subprocess.Popen(["setsid", "sleep", "600"]).pid)
reader, writer = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        os.write(writer, f"{os.getpid()}\\n".encode())
        time.sleep(600)
    os._exit(0)
pids.append(int(os.read(reader, 64)))
pathlib.Path(sys.argv[1]).write_text(" ".join(map(str, pids)))
time.sleep(600)
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", list(Transport))
def test_sigterm_finishes_the_short_task_and_hands_the_long_one_back_at_once(fleet, tmp_path):
    # A heartbeat timeout far beyond the waits below: only the handback can requeue.
    fleet.start_coordinator(heartbeat_timeout=120.0)
    options = WorkerOptions(slots=2, log_level="info", extra_args=("--shutdown-grace", "5"))
    leaving = fleet.start_worker("leaving", options)
    markers = tmp_path / "markers"
    markers.mkdir()
    ids = fleet.client.submit(
        [
            {
                "task_id": name,
                "type": "command",
                "config": {"argv": [sys.executable, "-c", SCRIPT, str(markers), name]},
                "timeout_seconds": 300,
            }
            for name in ("short", "long")
        ]
    )
    for name in ("short", "long"):
        started = markers / f"started-{name}-1"
        fleet.wait_until(started.exists, 60, f"{name} attempt 1 to start")

    fleet.send_signal(leaving, signal.SIGTERM)
    (markers / "gate").touch()  # the short task finishes within the grace
    assert leaving.wait(60) == 0
    signalled = time.monotonic()
    fleet.start_worker("staying", WorkerOptions(slots=2, log_level="info"))
    final = fleet.wait_terminal(ids, timeout=60)
    assert time.monotonic() - signalled < 120  # never waited for the heartbeat timeout

    assert final["short"]["status"] == "completed"
    assert final["short"]["attempts"] == 1
    assert final["short"]["worker_id"] == "leaving"
    assert final["long"]["status"] == "completed"
    assert final["long"]["worker_id"] == "staying"
    first, second = fleet.task("long")["attempts"]
    assert first["worker_id"] == "leaving"
    assert first["status"] == "cancelled"
    assert second["status"] == "completed"
    workers = {w["worker_id"]: w for w in fleet.client.workers()}
    assert workers["leaving"]["status"] == "left"


@pytest.mark.timeout(120)
def test_a_killed_workers_task_processes_end_with_it_even_those_that_left_the_group(
    fleet, tmp_path
):
    fleet.start_coordinator(heartbeat_timeout=60.0)
    worker = fleet.start_worker("doomed")
    pid_file = tmp_path / "pids"
    fleet.client.submit(
        {
            "task_id": "escapes",
            "type": "command",
            "config": {"argv": [sys.executable, "-c", ESCAPING, str(pid_file)]},
            "timeout_seconds": 300,
        }
    )
    fleet.wait_until(lambda: pid_file.exists() and pid_file.read_text(), 60, "the task's pids")
    pids = [int(p) for p in pid_file.read_text().split()]
    fleet.extra_pids.update(pids)  # if the guard fails, the fixture still cleans up
    assert len(pids) == 3
    assert all(pid_alive(p) for p in pids)

    fleet.send_signal(worker, signal.SIGKILL)
    fleet.wait_until(
        lambda: not any(pid_alive(p) for p in pids),
        30,
        f"the dead worker's task processes {pids} to end",
    )
