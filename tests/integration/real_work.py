"""Work for the one real worker a worker-channel abuse test keeps running beside its
bad peers (``test_it_worker_channel.py`` on the WebSocket, ``test_it_grpc_channel.py``
on gRPC): submit it, and check that it finished there, untouched by the abuse."""

from __future__ import annotations

from it_fleet import Fleet


def start_real_work(fleet: Fleet, prefix: str, count: int = 4, seconds: float = 1.0) -> list[str]:
    """Tasks for the real worker, waited on until at least one of them runs."""
    ids = fleet.client.submit(
        [
            {
                "task_id": f"{prefix}-{n}",
                "type": "simulated",
                "config": {"duration_seconds": seconds},
            }
            for n in range(count)
        ]
    )

    def running() -> bool:
        return any(fleet.task(i)["task"]["status"] == "running" for i in ids)

    fleet.wait_until(running, 60, f"a {prefix} task to run on the real worker")
    return ids


def assert_real_work_done(fleet: Fleet, ids: list[str], real_worker: str) -> None:
    """Each task completed once, on ``real_worker``, which is still connected."""
    finished = fleet.wait_terminal(ids, timeout=60)
    for task in finished.values():
        assert task["status"] == "completed", task
        assert task["attempts"] == 1, task
        assert task["worker_id"] == real_worker, task
    (real,) = [w for w in fleet.client.workers() if w["worker_id"] == real_worker]
    assert real["connected"] is True
    assert real["status"] == "connected"
