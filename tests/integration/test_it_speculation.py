"""A straggler's speculative copy with real processes (issue 14): a command that sleeps
for minutes only on the worker ``slow`` and returns at once elsewhere. It lands on
``slow``; once it runs past its estimate an idle worker gets a copy, the copy's
result counts, the slow attempt is cancelled, and both stay in the task's history.
"""

from __future__ import annotations

import time

import pytest
from it_fleet import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT

from testfleet.local_fleet import CoordinatorOptions

pytestmark = [pytest.mark.integration]

SLOW_ONLY_ON_ONE_WORKER = 'if [ "$TESTFLEET_WORKER_ID" = slow ]; then sleep 600; fi; echo done'


@pytest.mark.timeout(180)
def test_the_run_finishes_through_the_copy_and_the_straggler_is_cancelled(fleet):
    fleet.start_coordinator(
        CoordinatorOptions(
            heartbeat_interval=HEARTBEAT_INTERVAL,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            log_level="info",
            # A straggler after max(1 s x 1, 1 s + 2 s) = 3 s of running.
            extra_args=["--speculation-factor", "1", "--speculation-min-seconds", "2"],
        )
    )
    fleet.start_worker("slow")
    task = {
        "task_id": "straggler",
        "type": "command",
        "config": {"argv": ["sh", "-c", SLOW_ONLY_ON_ONE_WORKER]},
        "idempotent": True,
        "expected_seconds": 1,
        "timeout_seconds": 900,
    }
    started = time.monotonic()
    fleet.client.submit([task])
    fleet.wait_until(
        lambda: fleet.task("straggler")["task"]["status"] == "running" or None,
        30,
        "the task to run on the slow worker",
        poll=0.1,
    )
    fleet.start_worker("fast")  # idle, and no queued task could use it

    finished = fleet.wait_terminal(["straggler"], timeout=120)["straggler"]
    took = time.monotonic() - started
    assert finished["status"] == "completed", finished
    assert finished["worker_id"] == "fast"
    assert took < 300  # far inside the slow worker's 600 s sleep

    detail = fleet.task("straggler")
    attempts = {a["worker_id"]: a for a in detail["attempts"]}
    assert set(attempts) == {"slow", "fast"}
    assert attempts["fast"]["speculative"] is True
    assert attempts["fast"]["status"] == "completed"
    assert attempts["slow"]["speculative"] is False
    assert attempts["slow"]["status"] == "cancelled"
    assert detail["result"]["worker_id"] == "fast"
    assert [r["worker_id"] for r in detail["results"] if r["counted"]] == ["fast"]
    with fleet.http() as http:
        metrics = http.get("/metrics").text
    assert 'testfleet_speculative_copies_total{event="won"} 1.0' in metrics
