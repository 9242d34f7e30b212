"""SIGTERM to the coordinator mid-run (issue 12, "Graceful shutdown"): it commits
what is in flight, closes the worker channels with "service restart", exits 0;
restarted on the same file, it carries on: the attempts that were running go on
on the reconnected workers, their results count, and every task ends once.
"""

from __future__ import annotations

from collections import Counter

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT
from test_it_coordinator_restart import WORKERS, bookkeeping_problems, simulated

from testfleet.worker.transports import Transport

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Long enough to be running through the stop and the restart.
LONG_SECONDS = 8.0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("transport", list(Transport))
def test_sigterm_exits_zero_and_a_restart_carries_on_with_the_running_attempts(fleet):
    # Relaxed: the workers reconnect on their own backoff after the restart and
    # must not be declared lost by a starved machine's slow restart.
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    for worker_id in WORKERS:
        fleet.start_worker(worker_id, slots=2, wait=False)
    fleet.wait_for_workers(WORKERS)

    long = [{**simulated(f"sigterm-long-{n}", LONG_SECONDS), "priority": 1} for n in range(2)]
    short = [simulated(f"sigterm-{n:02d}", 0.2 + 0.3 * (n % 4) / 3) for n in range(30)]
    accepted = fleet.client.submit(long + short)
    long_ids = [t["task_id"] for t in long]

    def long_ones_running() -> bool:
        return all(fleet.task(t)["task"]["status"] == "running" for t in long_ids)

    fleet.wait_until(long_ones_running, 120, "the long tasks to run")
    # strict: a coordinator that needs SIGKILL fails the test.
    assert fleet.stop("coordinator") == 0
    assert "Traceback" not in fleet.tail("coordinator")
    # The workers did not take the close for a failure: they are still up.
    fleet.check_running(list(WORKERS))

    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)  # same file and port
    fleet.wait_for_workers(WORKERS, timeout=90)
    finished = fleet.wait_terminal(accepted, timeout=150)
    assert Counter(t["status"] for t in finished.values()) == {"completed": len(accepted)}
    for task_id in long_ids:
        # Carried on, not rerun: one attempt, and its result is the outcome.
        detail = fleet.task(task_id)
        assert detail["task"]["attempts"] == 1, detail["attempts"]
        assert detail["result"]["disposition"] == "outcome"

    fleet.stop_all()
    with fleet.open_store() as store:
        assert store.count_tasks() == len(accepted)
        assert bookkeeping_problems(store, accepted) == []
