"""A worker that asks for MessagePack frames works exactly like a JSON one, on
either transport (issue 16: the WebSocket and gRPC carry the same frames)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from it_fleet import Fleet

from testfleet.worker.transports import Transport

pytestmark = [pytest.mark.integration]


@pytest.mark.parametrize("transport", list(Transport))
def test_msgpack_worker_runs_tasks_beside_a_json_worker(fleet: Fleet) -> None:
    fleet.start_coordinator()
    fleet.start_worker("packed", slots=2, codec="msgpack", tags={"codec": "msgpack"})
    fleet.start_worker("plain", slots=2, codec="json", tags={"codec": "json"})
    tasks: list[dict[str, Any]] = []
    for codec in ("msgpack", "json"):
        tasks.append(
            {
                "task_id": f"echo-{codec}",
                "type": "command",
                "requirements": {"tags": {"codec": codec}},
                "config": {"argv": [sys.executable, "-c", "print('héllo ✓')"]},
            }
        )
        tasks.append(
            {
                "task_id": f"sim-{codec}",
                "type": "simulated",
                "requirements": {"tags": {"codec": codec}},
                "config": {"duration_seconds": 0.05},
            }
        )
    fleet.client.submit(tasks)
    finished = fleet.wait_terminal([t["task_id"] for t in tasks])
    assert {t["status"] for t in finished.values()} == {"completed"}
    for codec, worker in (("msgpack", "packed"), ("json", "plain")):
        echo = fleet.task(f"echo-{codec}")
        assert echo["task"]["worker_id"] == worker
        assert echo["result"]["results"]["output_tail"] == "héllo ✓\n"
        assert echo["result"]["simulation_status"]["is_simulated"] is False
        simulated = fleet.task(f"sim-{codec}")
        assert simulated["result"]["simulation_status"]["is_simulated"] is True
