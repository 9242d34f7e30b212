"""200 tasks through a coordinator and three worker processes, checked in the DuckDB file:
on the WebSocket, and on a mixed fleet where two of the three join over gRPC
(issue 16: workers on either transport share one fleet)."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet

from testfleet.worker.transports import Transport

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = ("tp-worker-1", "tp-worker-2", "tp-worker-3")
#: How each worker joins, per fleet: all on the WebSocket, or mixed (gRPC with
#: both codecs beside a WebSocket worker).
FLEETS = {
    "websocket": {worker: (Transport.WEBSOCKET, "json") for worker in WORKERS},
    "mixed": {
        "tp-worker-1": (Transport.WEBSOCKET, "json"),
        "tp-worker-2": (Transport.GRPC, "msgpack"),
        "tp-worker-3": (Transport.GRPC, "json"),
    },
}
COMMAND_TASKS = 20
SIMULATED_TASKS = 180


def batch() -> list[dict]:
    tasks: list[dict] = []
    for n in range(COMMAND_TASKS):
        tasks.append(
            {
                "task_id": f"tp-command-{n:03d}",
                "type": "command",
                "priority": n % 7,
                "config": {"argv": [sys.executable, "-c", f"print({n})"]},
                "timeout_seconds": 120,
            }
        )
    for n in range(SIMULATED_TASKS):
        config: dict = (
            {"duration_seconds": 0.01 * (n % 6)}
            if n % 2
            else {
                "sampled_duration": {
                    "distribution": "uniform",
                    "low_seconds": 0.0,
                    "high_seconds": 0.1,
                },
                "seed": n,
            }
        )
        tasks.append(
            {
                "task_id": f"tp-sim-{n:03d}",
                "type": "simulated",
                "priority": n % 5,
                "config": config,
                "timeout_seconds": 120,
            }
        )
    return tasks


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("joined", "transport"), [("websocket", Transport.WEBSOCKET), ("mixed", Transport.GRPC)]
)
def test_two_hundred_tasks_complete_once_each_across_three_workers(fleet: Fleet, joined: str):
    how = FLEETS[joined]
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    for worker_id, (transport, codec) in how.items():
        fleet.start_worker(worker_id, slots=2, wait=False, transport=transport, codec=codec)
    fleet.wait_for_workers(WORKERS)

    documents = batch()
    ids = fleet.client.submit(documents)
    assert sorted(ids) == sorted(d["task_id"] for d in documents)

    finished = fleet.wait_terminal(ids, timeout=180)
    assert Counter(t["status"] for t in finished.values()) == {"completed": len(ids)}

    fleet.stop_all()
    with fleet.open_store() as store:
        tasks = store.list_tasks(limit=10_000)
        assert len(tasks) == 200
        assert {t.spec.task_id for t in tasks} == set(ids)
        assert store.count_tasks() == 200
        assert all(t.status.value == "completed" for t in tasks)
        assert store.attempt_count() == 200

        by_worker: Counter[str] = Counter()
        for task in tasks:
            task_id = task.spec.task_id
            attempts = store.get_attempts(task_id)
            results = store.get_results(task_id)
            assert len(attempts) == 1, (task_id, attempts)
            (attempt,) = attempts
            assert attempt.status.value == "completed", (task_id, attempt)
            assert attempt.attempt == 1
            assert attempt.worker_id in WORKERS, (task_id, attempt.worker_id)
            assert task.attempts == 1
            assert task.current_attempt_id == attempt.attempt_id
            assert task.worker_id == attempt.worker_id

            assert len(results) == 1, (task_id, results)
            (result,) = results
            assert result.counted
            assert result.attempt_id == attempt.attempt_id
            assert result.worker_id == attempt.worker_id
            document = result.result
            assert document.task_id == task_id
            assert document.worker_id == attempt.worker_id
            assert document.status.value == "completed"
            assert document.error is None
            if task.spec.type.value == "simulated":
                assert document.simulation_status.is_simulated is True
            else:
                assert document.simulation_status.is_simulated is False
                assert document.results["exit_code"] == 0
                n = int(task_id.rsplit("-", 1)[1])
                assert document.results["output_tail"].strip() == str(n)
            by_worker[attempt.worker_id] += 1

        assert sum(by_worker.values()) == 200
        assert len(by_worker) > 1, f"every task ran on one worker: {by_worker}"
        registered = {w.worker_id for w in store.list_workers()}
        assert registered == set(WORKERS)
