"""The worker agent's graceful stop (issue 12), against a scripted coordinator on a fake clock.

A stop says ``bye`` first (the coordinator assigns nothing more), rejects
assignments already on the way, lets running attempts finish within
``shutdown_grace_seconds``, then reports the rest cancelled (the coordinator
requeues those at once). A second stop ends the grace at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_agent_session import CAPS, ScriptedCoordinator, receive, welcome

from testfleet.domain.enums import ResultStatus, TaskType
from testfleet.domain.result import SimulationStatus, TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.protocol.codec import encode
from testfleet.protocol.messages import Accept, Ack, Assign, Assignment, Bye, Reject, Result
from testfleet.testing import FakeClock
from testfleet.worker.agent import AgentSettings, WorkerAgent
from testfleet.worker.executors.base import ExecutionContext, ExecutorBase


class GateExecutor(ExecutorBase):
    """Runs until the test opens its gate (completed) or the attempt is cancelled."""

    task_type = TaskType.SIMULATED

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def run(self, task: TaskSpec, context: ExecutionContext) -> TaskResult:
        self.started.set()
        opened = asyncio.ensure_future(self.gate.wait())
        cancelled = asyncio.ensure_future(context.cancel_event.wait())
        await asyncio.wait({opened, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        opened.cancel()
        cancelled.cancel()
        status = ResultStatus.COMPLETED if self.gate.is_set() else ResultStatus.CANCELLED
        return TaskResult(
            task_id=task.task_id,
            worker_id=context.worker_id,
            status=status,
            execution_time_seconds=0.0,
            simulation_status=SimulationStatus(is_simulated=True),
        )


@pytest.fixture
async def coordinator() -> AsyncIterator[ScriptedCoordinator]:
    fake = ScriptedCoordinator(FakeClock())
    async with fake.clock.autojump():
        yield fake
        await fake.connector.close()


def make_agent(
    coordinator: ScriptedCoordinator, tmp_path: Path, executor: GateExecutor, grace: float
) -> WorkerAgent:
    return WorkerAgent(
        AgentSettings(
            coordinator_url="http://coordinator.test:8700",
            worker_id="w1",
            slots=2,
            work_dir=tmp_path,
            shutdown_grace_seconds=grace,
        ),
        CAPS,
        {TaskType.SIMULATED: executor},
        rng=random.Random(1),
        clock=coordinator.clock,
        connector=coordinator.connector,
    )


def assign(attempt_id: int, task_id: str) -> str:
    task = TaskSpec.model_validate({"task_id": task_id, "type": "simulated"})
    return str(
        encode(Assign(assignments=[Assignment(attempt_id=attempt_id, attempt=1, task=task)]))
    )


async def started_session(
    coordinator: ScriptedCoordinator, agent: WorkerAgent, executor: GateExecutor
) -> tuple[asyncio.Task[None], Any]:
    """The agent connected and running attempt 7."""
    running = asyncio.create_task(agent.run())
    session = await coordinator.next_session()
    await receive(coordinator, session)  # hello
    await session.send(welcome())
    await session.send(assign(7, "long"))
    assert await receive(coordinator, session) == Accept(attempt_ids=[7])
    await coordinator.within(executor.started.wait())
    return running, session


async def result_of(coordinator: ScriptedCoordinator, session: Any) -> Result:
    while True:
        message = await receive(coordinator, session)
        if isinstance(message, Result):
            return message


async def test_stop_says_bye_first_rejects_late_assignments_and_lets_the_attempt_finish(
    coordinator: ScriptedCoordinator, tmp_path: Path
) -> None:
    executor = GateExecutor()
    agent = make_agent(coordinator, tmp_path, executor, grace=30.0)
    running, session = await started_session(coordinator, agent, executor)
    started = coordinator.clock.now()

    agent.stop()
    assert isinstance(await receive(coordinator, session), Bye)
    # An assignment sent before the bye arrived is refused, not started.
    await session.send(assign(8, "late"))
    reject = await receive(coordinator, session)
    assert isinstance(reject, Reject)
    assert reject.attempt_id == 8
    assert "stopping" in reject.reason
    executor.gate.set()  # the running attempt finishes within the grace
    result = await result_of(coordinator, session)
    assert [(r.attempt_id, r.result.status) for r in result.results] == [
        (7, ResultStatus.COMPLETED)
    ]
    assert coordinator.clock.now() - started < 30.0
    await session.send(encode(Ack(attempt_ids=[7])))
    await coordinator.within(running)  # run() returns: the CLI exits 0


async def test_what_is_still_running_when_the_grace_ends_is_handed_back_cancelled(
    coordinator: ScriptedCoordinator, tmp_path: Path
) -> None:
    executor = GateExecutor()
    agent = make_agent(coordinator, tmp_path, executor, grace=30.0)
    running, session = await started_session(coordinator, agent, executor)
    started = coordinator.clock.now()

    agent.stop()
    assert isinstance(await receive(coordinator, session), Bye)
    result = await result_of(coordinator, session)
    assert [(r.attempt_id, r.result.status) for r in result.results] == [
        (7, ResultStatus.CANCELLED)
    ]
    assert coordinator.clock.now() - started >= 30.0  # it had the whole grace
    await session.send(encode(Ack(attempt_ids=[7])))
    await coordinator.within(running)


async def test_a_second_stop_ends_the_grace_at_once(
    coordinator: ScriptedCoordinator, tmp_path: Path
) -> None:
    executor = GateExecutor()
    agent = make_agent(coordinator, tmp_path, executor, grace=3600.0)
    running, session = await started_session(coordinator, agent, executor)
    started = coordinator.clock.now()

    agent.stop()
    assert isinstance(await receive(coordinator, session), Bye)
    agent.stop()
    result = await result_of(coordinator, session)
    assert [r.result.status for r in result.results] == [ResultStatus.CANCELLED]
    assert coordinator.clock.now() - started < 3600.0
    await session.send(encode(Ack(attempt_ids=[7])))
    with contextlib.suppress(asyncio.CancelledError):
        await coordinator.within(running)
