"""A whole fleet in one process: the real coordinator loop and two real agents,
joined by in-memory channels, on an autojumping fake clock.

No socket, no thread, no wall time: a lost connection and the backoff after it
happen at fake moments a test can predict to the bit.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from testfleet.domain.enums import ResultStatus, TaskStatus
from testfleet.domain.task import TaskSpec
from testfleet.protocol.channel import Frame
from testfleet.protocol.codec import decode
from testfleet.protocol.messages import MessageType
from testfleet.store import Store
from testfleet.testing.fleet import in_process_fleet
from testfleet.worker.backoff import backoff_delay


def simulated(task_id: str, seconds: float = 0.0) -> TaskSpec:
    return TaskSpec.model_validate(
        {"task_id": task_id, "type": "simulated", "config": {"duration_seconds": seconds}}
    )


def finished(store: Store, task_ids: list[str]) -> bool:
    tasks = [store.get_task(task_id) for task_id in task_ids]
    return all(t is not None and t.status is TaskStatus.COMPLETED for t in tasks)


async def test_two_workers_run_simulated_tasks_to_completion(tmp_path: Path) -> None:
    async with in_process_fleet(tmp_path / "fleet.duckdb") as fleet:
        w1 = fleet.add_worker("w1", slots=2, seed=1)
        w2 = fleet.add_worker("w2", slots=2, seed=2)
        await fleet.wait_until(lambda: w1.agent.connected.is_set() and w2.agent.connected.is_set())
        task_ids = [f"t{n}" for n in range(20)]
        await fleet.loop.submit([simulated(task_id) for task_id in task_ids])

        await fleet.wait_until(lambda: finished(fleet.store, task_ids))
        await fleet.wait_until(lambda: w1.agent.held_count == w2.agent.held_count == 0)

        ran_on: set[str] = set()
        for task_id in task_ids:
            results = fleet.store.get_results(task_id)
            assert len(results) == 1
            assert results[0].result.status is ResultStatus.COMPLETED
            assert results[0].result.simulation_status.is_simulated
            ran_on.add(results[0].worker_id)
        assert ran_on == {"w1", "w2"}
        assert w1.agent.completed + w2.agent.completed == len(task_ids)


async def test_a_simulated_task_takes_its_duration_in_fake_time(tmp_path: Path) -> None:
    """The agent hands its (fake) clock to the executors: 30 simulated seconds pass
    on the fleet's clock, not on the wall's (a real wait would also let the
    autojumping clock run far past +30 while it lasted)."""
    async with in_process_fleet(tmp_path / "fleet.duckdb") as fleet:
        worker = fleet.add_worker("w1", seed=3)
        await fleet.wait_until(worker.agent.connected.is_set)
        await fleet.loop.submit([simulated("slow", seconds=30)])
        await fleet.wait_until(lambda: finished(fleet.store, ["slow"]))

        [attempt] = fleet.store.get_attempts("slow")
        assert attempt.accepted_time is not None
        assert attempt.end_time is not None
        # Accepted when it started; ended when its result arrived, 30 s later
        # (the in-memory channel delivers at once, in fake time).
        assert attempt.end_time - attempt.accepted_time == pytest.approx(30.0, abs=1e-6)
        assert attempt.execution_time_seconds == pytest.approx(30.0, abs=1e-6)
        [result] = fleet.store.get_results("slow")
        assert result.result.status is ResultStatus.COMPLETED
        assert result.result.results == {"simulated_duration_seconds": 30.0}


async def test_a_lost_ack_and_a_severed_channel_still_record_the_result_once(
    tmp_path: Path,
) -> None:
    async with in_process_fleet(tmp_path / "fleet.duckdb") as fleet:
        worker = fleet.add_worker("w1", seed=7)
        await fleet.wait_until(worker.agent.connected.is_set)
        first = worker.connector.links[0]

        lost_acks: list[Frame] = []

        def lose_acks(frame: Frame) -> bool:
            if decode(frame).type is MessageType.ACK:
                lost_acks.append(frame)
                return True
            return False

        # The coordinator commits the result, but its ack never arrives.
        first.coordinator.drop = lose_acks
        await fleet.loop.submit([simulated("a")])
        await fleet.wait_until(lambda: finished(fleet.store, ["a"]) and bool(lost_acks))
        assert worker.agent.held_count == 1  # so the worker still holds it

        severed_at = fleet.clock.now()
        first.worker.sever()
        await fleet.wait_until(lambda: worker.agent.held_count == 0)

        # One reconnect, exactly one backoff pause after the loss (fake time, and
        # the agent's jitter comes from its seeded generator).
        expected_pause = backoff_delay(
            0,
            random.Random(7),
            worker.agent.settings.backoff_base_seconds,
            worker.agent.settings.backoff_cap_seconds,
        )
        assert len(worker.connector.links) == 2
        assert worker.connected_at[1] == severed_at + expected_pause
        # The result went twice; the coordinator recorded it once, on one attempt.
        second = worker.connector.links[1]
        resent = [decode(f) for f in second.worker.sent]
        assert [m.type for m in resent][:1] == [MessageType.HELLO]
        assert MessageType.RESULT in [m.type for m in resent]
        assert len(fleet.store.get_attempts("a")) == 1
        results = fleet.store.get_results("a")
        assert len(results) == 1
        counted = fleet.store.get_counted_result("a")
        assert counted is not None
        assert counted.result.status is ResultStatus.COMPLETED


async def test_a_revoked_worker_is_closed_at_once_and_its_task_finishes_elsewhere(
    tmp_path: Path,
) -> None:
    from testfleet.security.audit import AuditKind
    from testfleet.testing.fleet import in_process_token
    from testfleet.worker.agent import WorkerRefusedError

    async with in_process_fleet(tmp_path / "fleet.duckdb") as fleet:
        victim = fleet.add_worker("victim", seed=1)
        await fleet.wait_until(lambda: victim.agent.connected.is_set())
        await fleet.loop.submit([simulated("long", seconds=60.0)])
        tasks = fleet.loop.state.tasks
        await fleet.wait_until(lambda: tasks["long"].status is TaskStatus.RUNNING)
        await fleet.loop.revoke("victim", fleet.clock.now())
        await fleet.wait_until(lambda: victim.runner.done())
        with pytest.raises(WorkerRefusedError, match="revoked"):
            victim.runner.result()
        del fleet.workers["victim"]  # it exited, as `testfleet worker` would
        rescuer = fleet.add_worker("rescuer", seed=2)
        await fleet.wait_until(lambda: finished(fleet.store, ["long"]))
        assert fleet.store.get_results("long")[-1].worker_id == "rescuer"
        assert rescuer.agent.completed == 1

        # Back with its old credential: refused at the hello, and audited.
        again = fleet.add_worker(
            "victim", seed=3, credential=in_process_token("victim", fleet.clock.now() - 100)
        )
        await fleet.wait_until(lambda: again.runner.done())
        with pytest.raises(WorkerRefusedError, match="revoked"):
            again.runner.result()
        del fleet.workers["victim"]
        events = fleet.store.audit_events()
        refused = [e for e in events if e.kind is AuditKind.WORKER_REFUSED]
        assert [e.detail["reason"] for e in refused] == ["revoked"]
        assert refused[0].detail["claimed_id"] == "victim"
