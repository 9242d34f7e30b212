"""Live log tails end to end: a real worker streams a running command's output,
the coordinator serves it while the task runs, and ``testfleet logs --follow``
prints it to the last line (a real fleet on loopback, TLS and tokens as by default)."""

from __future__ import annotations

import json
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


def _events(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if fields:
            events.append(fields)
    return events


def test_the_event_stream_follows_a_running_task_and_resumes_by_last_event_id(
    fleet: Fleet,
) -> None:
    fleet.start_coordinator()
    fleet.start_worker("log-worker")
    (task_id,) = fleet.client.submit([_command_task("live-log-3")])
    with fleet.http() as http:
        with http.stream("GET", f"/api/v1/tasks/{task_id}/log/stream", timeout=60) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            body = "".join(response.iter_text())
        events = _events(body)
        assert events[-1]["event"] == "end"
        assert json.loads(events[-1]["data"]) == {"status": "completed"}
        logs = [e for e in events if e["event"] == "log"]
        assert len(logs) >= 2  # came live, piece by piece
        text = "".join(json.loads(e["data"])["data"] for e in logs)
        assert text.splitlines() == [f"tick {i}" for i in range(LINES)]
        # Reconnecting after the first event resumes after it: nothing repeated.
        resumed = http.get(
            f"/api/v1/tasks/{task_id}/log/stream",
            headers={"Last-Event-ID": logs[0]["id"]},
            timeout=60,
        )
        again = [e for e in _events(resumed.text) if e["event"] == "log"]
        assert [e["id"] for e in again] == [e["id"] for e in logs[1:]]
