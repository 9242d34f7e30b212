"""A worker that asks for MessagePack frames works exactly like a JSON one, on
either transport, and over gRPC so does one that asks for Protocol Buffers
(issue 16: the WebSocket and gRPC carry the same messages)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from it_fleet import Fleet

from testfleet.worker.transports import Transport

pytestmark = [pytest.mark.integration]


#: Worker id per codec.
WORKERS = {"msgpack": "packed", "json": "plain", "protobuf": "enveloped"}


@pytest.mark.parametrize("transport", list(Transport))
def test_msgpack_worker_runs_tasks_beside_a_json_worker(fleet: Fleet, transport) -> None:
    # Protocol Buffers travel over gRPC only (a WebSocket frame is text or bytes).
    codecs = list(WORKERS) if transport is Transport.GRPC else ["msgpack", "json"]
    fleet.start_coordinator()
    for codec in codecs:
        fleet.start_worker(WORKERS[codec], slots=2, codec=codec, tags={"codec": codec})
    tasks: list[dict[str, Any]] = []
    for codec in codecs:
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
    for codec in codecs:
        echo = fleet.task(f"echo-{codec}")
        assert echo["task"]["worker_id"] == WORKERS[codec]
        assert echo["result"]["results"]["output_tail"] == "héllo ✓\n"
        assert echo["result"]["simulation_status"]["is_simulated"] is False
        simulated = fleet.task(f"sim-{codec}")
        assert simulated["result"]["simulation_status"]["is_simulated"] is True
