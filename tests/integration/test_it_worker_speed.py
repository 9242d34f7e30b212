"""Measured worker speeds in a real fleet: a coordinator started with
``--scheduling-policy estimated-finish`` runs repeated work on two workers,
``testfleet workers`` shows each one's speed, and a restarted coordinator reads
the speeds back from its database before any new result arrives."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from it_fleet import Fleet

from testfleet.local_fleet import CoordinatorOptions

pytestmark = [pytest.mark.integration]

OPTIONS = CoordinatorOptions(
    heartbeat_interval=0.5,
    heartbeat_timeout=5.0,
    log_level="info",
    extra_args=("--scheduling-policy", "estimated-finish"),
)


def listed(fleet: Fleet) -> dict[str, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "testfleet", "workers", "--json"],
        capture_output=True,
        text=True,
        env=fleet.env(),
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {w["worker_id"]: w for w in json.loads(done.stdout)["workers"]}


def test_speeds_are_measured_shown_and_read_back_after_a_restart(fleet: Fleet) -> None:
    fleet.start_coordinator(OPTIONS)
    fleet.start_worker("w1", wait=False)
    fleet.start_worker("w2", wait=False)
    fleet.wait_for_workers(["w1", "w2"])
    # Eight pieces of work, each submitted twice at once: with one slot each,
    # both workers run every piece, so each is compared with the other.
    task_ids: list[str] = []
    for k in range(8):
        pair = [f"s{k}-{n}" for n in range(2)]
        config = {"duration_seconds": 0.2, "seed": k}
        fleet.client.submit([{"task_id": t, "type": "simulated", "config": config} for t in pair])
        task_ids += pair
        fleet.wait_terminal(pair)
    ran = {fleet.task(t)["task"]["worker_id"] for t in task_ids}
    assert ran == {"w1", "w2"}
    before = listed(fleet)
    for worker_id in ("w1", "w2"):
        shown = before[worker_id]
        # Equal work on an equally fast machine: about typical, however loaded.
        assert 0.2 < float(shown["speed_factor"]) < 5.0, shown  # type: ignore[arg-type]
        assert int(shown["speed_samples"]) >= 5, shown  # type: ignore[call-overload]
        assert shown["slowed"] is False

    fleet.stop("coordinator")
    fleet.start_coordinator(OPTIONS)
    after = listed(fleet)
    for worker_id in ("w1", "w2"):
        assert after[worker_id]["speed_factor"] == before[worker_id]["speed_factor"]
        assert after[worker_id]["speed_samples"] == before[worker_id]["speed_samples"]
