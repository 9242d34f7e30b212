"""Identity after restarts (issue 12): a worker id claimed by two processes
across a coordinator restart.

The coordinator restarts while worker ``ident-w`` is connected; a second
process holding valid credentials for the same id starts during the restart
window. Whichever says hello first keeps the id while its connection lives;
the other is refused with ``worker_id_in_use`` and keeps retrying with
backoff (it used to exit for good). Once the second process stops, the
original ends up connected and runs work; nothing crashes.
"""

from __future__ import annotations

import signal

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER = "ident-w"
CLAIMANT = "ident-w-second-process"


def welcomes(fleet, name: str) -> int:
    """How often process ``name`` was welcomed after failed tries (its log's
    "connected to ... after N failed attempt(s)" warnings: a welcome after the
    coordinator came back)."""
    return fleet.tail(name, 1_000_000).count(f"worker {WORKER}: connected to")


@pytest.mark.timeout(300)
def test_a_refused_claimant_retries_and_the_original_ends_up_connected(fleet):
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    original = fleet.start_worker(WORKER)
    before = welcomes(fleet, WORKER)

    fleet.send_signal(fleet.processes["coordinator"], signal.SIGKILL)
    # Same id, same credentials (the fleet's certificate for the id), another process.
    claimant = fleet.start_worker(WORKER, name=CLAIMANT, wait=False)
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    fleet.wait_for_workers([WORKER], timeout=90)

    def someone_refused() -> bool:
        return any("worker_id_in_use" in fleet.tail(name, 1_000_000) for name in (WORKER, CLAIMANT))

    fleet.wait_until(someone_refused, 60, "one of the two processes to be refused")
    refused = next(n for n in (WORKER, CLAIMANT) if "worker_id_in_use" in fleet.tail(n, 1_000_000))

    def channels_since_the_restart() -> int:
        log = fleet.tail("coordinator", 10_000_000)
        since = log[log.rindex("=== start") :]
        return since.count('"WebSocket /api/v1/workers/connect" [accepted]')

    # It retries instead of exiting (its worker log says so once; the
    # coordinator's access log shows each try): one welcome, then refusals.
    fleet.wait_until(
        lambda: channels_since_the_restart() >= 4, 90, f"{refused} to try again, twice"
    )
    assert original.poll() is None, fleet.tail(WORKER)
    assert claimant.poll() is None, fleet.tail(CLAIMANT)

    # The second process goes; the original holds (or gets) the id.
    assert fleet.stop(claimant) == 0
    fleet.wait_until(lambda: welcomes(fleet, WORKER) > before, 90, "the original to reconnect")

    def connected() -> bool:
        return any(w["worker_id"] == WORKER and w["connected"] for w in fleet.client.workers())

    # (Not wait_for_workers: it watches the process last started under the id.)
    fleet.wait_until(connected, 90, f"{WORKER} to be connected")
    (task_id,) = fleet.client.submit(
        {"task_id": "ident-task", "type": "simulated", "config": {"duration_seconds": 0.1}}
    )
    (final,) = fleet.wait_terminal([task_id], timeout=90).values()
    assert final["status"] == "completed"
    assert final["worker_id"] == WORKER
    assert original.poll() is None
    for name in (WORKER, CLAIMANT):
        assert "Traceback" not in fleet.tail(name, 1_000_000), fleet.tail(name)
