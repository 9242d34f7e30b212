"""Live log tails end to end: a real worker streams a running command's output,
the coordinator serves it while the task runs, and ``testfleet logs --follow``
prints it to the last line (a real fleet on loopback, TLS and tokens as by default)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from it_fleet import Fleet

pytestmark = [pytest.mark.integration]

LINES = 15
#: A line every 0.2 s for about 3 s.
SCRIPT = (
    "import time\n"
    f"for i in range({LINES}):\n"
    "    print(f'tick {i}', flush=True)\n"
    "    time.sleep(0.2)\n"
)


def _command_task(task_id: str) -> dict:
    return {
        "task_id": task_id,
        "type": "command",
        "timeout_seconds": 60,
        "config": {"argv": [sys.executable, "-c", SCRIPT]},
    }


def test_the_log_of_a_running_command_is_served_while_it_runs(fleet: Fleet) -> None:
    fleet.start_coordinator()
    fleet.start_worker("log-worker")
    (task_id,) = fleet.client.submit([_command_task("live-log-1")])

    def first_line() -> dict | None:
        answer = fleet.client.task_log(task_id)
        return answer if any("tick" in c["data"] for c in answer["chunks"]) else None

    seen = fleet.wait_until(first_line, 30, "a line of the running task's log", poll=0.05)
    assert seen["running"]
    assert not seen["finished"]
    # Still running: the lines came live, not from the result.
    assert fleet.task(task_id)["task"]["status"] == "running"
    assert seen["final_log"] is None

    fleet.wait_terminal([task_id])
    # A follower resuming after what it saw gets the rest, ending with the last line.
    rest = fleet.client.task_log(task_id, after=seen["next_after"])
    assert rest["finished"]
    text = "".join(c["data"] for c in seen["chunks"] + rest["chunks"]) + (rest["final_log"] or "")
    assert f"tick {LINES - 1}" in text
    # A fresh read of a finished task gets the log stored with its result.
    fresh = fleet.client.task_log(task_id)
    assert fresh["final_log"] is not None
    assert fresh["final_log"].splitlines() == [f"tick {i}" for i in range(LINES)]


def test_logs_follow_prints_to_the_last_line_and_exits_0(fleet: Fleet) -> None:
    fleet.start_coordinator()
    fleet.start_worker("log-worker")
    (task_id,) = fleet.client.submit([_command_task("live-log-2")])
    done = subprocess.run(
        [sys.executable, "-m", "testfleet", "logs", task_id, "--follow", "--poll", "0.1"],
        capture_output=True,
        text=True,
        env=fleet.env(),
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert lines[-1] == f"tick {LINES - 1}"
    assert lines == [f"tick {i}" for i in range(LINES)]  # each line once, in order
