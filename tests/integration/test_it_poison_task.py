"""A poison task (issue 12): a command that kills the worker it runs on
(``kill -9 $PPID``: the worker is the command's parent). It must be stopped
after ``--max-lost-attempts`` + 1 lost attempts and reported as
``lost_too_often``, naming how many it took down, while the other tasks
complete on the worker that is left.
"""

from __future__ import annotations

from collections import Counter

import pytest
from it_fleet import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT

from testfleet.local_fleet import CoordinatorOptions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = ("poison-a", "poison-b", "poison-c")
MAX_LOST = 1


@pytest.mark.timeout(300)
def test_a_task_that_kills_its_workers_fails_as_lost_too_often_and_the_rest_complete(fleet):
    fleet.start_coordinator(
        CoordinatorOptions(
            heartbeat_interval=HEARTBEAT_INTERVAL,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            log_level="info",
            extra_args=["--max-lost-attempts", str(MAX_LOST)],
        )
    )
    processes = {w: fleet.start_worker(w, slots=1, wait=False) for w in WORKERS}
    fleet.wait_for_workers(WORKERS)

    poison = {
        "task_id": "poison",
        "type": "command",
        "config": {"argv": ["sh", "-c", "kill -9 $PPID; sleep 30"]},
        "priority": 1,
        "timeout_seconds": 120,
    }
    others = [
        {"task_id": f"ok-{n}", "type": "simulated", "config": {"duration_seconds": 0.2}}
        for n in range(8)
    ]
    accepted = fleet.client.submit([poison, *others])
    finished = fleet.wait_terminal(accepted, timeout=180)

    assert finished["poison"]["status"] == "failed", finished["poison"]
    final = fleet.task("poison")["task"]
    assert final["error"]["error_class"] == "lost_too_often", final
    assert final["attempts"] == MAX_LOST + 1
    assert f"stopped after {MAX_LOST + 1} attempts lost their workers" in final["error"]["message"]
    assert Counter(finished[t["task_id"]]["status"] for t in others) == {"completed": len(others)}

    detail = fleet.task("poison")
    assert detail["result"] is None  # no attempt ever reported
    assert [a["status"] for a in detail["attempts"]] == ["lost"] * (MAX_LOST + 1)
    victims = {a["worker_id"] for a in detail["attempts"]}
    assert len(victims) == MAX_LOST + 1  # one worker per lost attempt
    survivors = set(WORKERS) - victims
    assert len(survivors) == 1
    for worker_id in victims:
        assert processes[worker_id].wait(30) == -9
    (survivor,) = survivors
    assert processes[survivor].poll() is None
