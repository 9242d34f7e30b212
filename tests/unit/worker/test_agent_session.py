"""The worker agent against a scripted coordinator on loopback.

The fake coordinator is a real WebSocket server that speaks the protocol from
a script, so the agent's own behaviour is pinned down exactly: what its hello
says, that it accepts and runs assignments, and that a result stays held and is
sent again after a reconnect until it is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.task import TaskSpec
from testfleet.protocol.codec import decode, encode
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Ack,
    Assign,
    Assignment,
    Error,
    Hello,
    ProtocolErrorCode,
    Result,
    Welcome,
)
from testfleet.worker.agent import AgentSettings, WorkerAgent, WorkerRefusedError
from testfleet.worker.executors.registry import default_executors

CAPS = WorkerCapabilities(
    hostname="h",
    os="Linux",
    python_version="3.11",
    hardware=[HardwareKind.CPU],
    task_types=[TaskType.COMMAND, TaskType.SIMULATED],
)


class ScriptedCoordinator:
    """Accepts connections and hands each to the next scripted session."""

    def __init__(self) -> None:
        self.sessions: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.port = 0

    async def handler(self, socket: ServerConnection) -> None:
        done = asyncio.get_running_loop().create_future()
        socket.done = done  # type: ignore[attr-defined]
        await self.sessions.put(socket)
        await done  # the test decides when this connection ends

    async def next_session(self) -> ServerConnection:
        return await asyncio.wait_for(self.sessions.get(), 10)


async def receive(socket: ServerConnection) -> Any:
    return decode(await asyncio.wait_for(socket.recv(), 10))


def welcome(worker_id: str = "w1") -> str:
    return str(
        encode(
            Welcome(
                protocol_version=PROTOCOL_VERSION,
                worker_id=worker_id,
                heartbeat_interval_seconds=30,
                heartbeat_timeout_seconds=60,
            )
        )
    )


def end(socket: ServerConnection) -> None:
    socket.done.set_result(None)  # type: ignore[attr-defined]


@pytest.fixture
async def coordinator() -> AsyncIterator[ScriptedCoordinator]:
    fake = ScriptedCoordinator()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        fake.port = next(iter(server.sockets)).getsockname()[1]
        yield fake


def make_agent(port: int, tmp_path: Path) -> WorkerAgent:
    return WorkerAgent(
        AgentSettings(
            coordinator_url=f"http://127.0.0.1:{port}",
            worker_id="w1",
            slots=2,
            work_dir=tmp_path,
            backoff_base_seconds=0.01,
            backoff_cap_seconds=0.02,
        ),
        CAPS,
        default_executors(),
        rng=random.Random(1),
    )


def simulated(task_id: str) -> TaskSpec:
    return TaskSpec.model_validate({"task_id": task_id, "type": "simulated"})


async def test_result_is_held_and_resent_until_acknowledged(
    coordinator: ScriptedCoordinator, tmp_path: Path
) -> None:
    agent = make_agent(coordinator.port, tmp_path)
    running = asyncio.create_task(agent.run())
    try:
        first = await coordinator.next_session()
        hello = await receive(first)
        assert isinstance(hello, Hello)
        assert hello.worker_id == "w1"
        assert hello.slots == 2
        assert hello.running_attempts == []
        assert hello.held_results == []
        await first.send(welcome())
        await first.send(
            encode(Assign(assignments=[Assignment(attempt_id=7, attempt=1, task=simulated("a"))]))
        )
        accept = await receive(first)
        assert accept == Accept(attempt_ids=[7])
        result = await receive(first)
        assert isinstance(result, Result)
        assert [r.attempt_id for r in result.results] == [7]
        assert result.results[0].result.simulation_status.is_simulated is True
        # The coordinator goes away before acknowledging.
        end(first)

        second = await coordinator.next_session()
        hello = await receive(second)
        assert isinstance(hello, Hello)
        assert hello.held_results == [7]  # still held
        assert hello.session_key == agent.session_key  # the same process
        await second.send(welcome())
        resent = await receive(second)
        assert isinstance(resent, Result)
        assert resent.results == result.results  # the same result, unchanged
        await second.send(encode(Ack(attempt_ids=[7])))
        for _ in range(100):
            if agent.held_count == 0:
                break
            await asyncio.sleep(0)
        assert agent.held_count == 0
        end(second)
    finally:
        agent.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)


async def test_refusal_for_a_taken_id_stops_the_agent(
    coordinator: ScriptedCoordinator, tmp_path: Path
) -> None:
    agent = make_agent(coordinator.port, tmp_path)
    running = asyncio.create_task(agent.run())
    session = await coordinator.next_session()
    await receive(session)
    await session.send(
        encode(Error(code=ProtocolErrorCode.WORKER_ID_IN_USE, message="worker id 'w1' is taken"))
    )
    with pytest.raises(WorkerRefusedError, match="taken"):
        await asyncio.wait_for(running, 10)
    end(session)


async def test_assignment_of_an_unknown_type_is_rejected(
    coordinator: ScriptedCoordinator, tmp_path: Path
) -> None:
    agent = make_agent(coordinator.port, tmp_path)
    agent.executors = {TaskType.SIMULATED: agent.executors[TaskType.SIMULATED]}
    running = asyncio.create_task(agent.run())
    try:
        session = await coordinator.next_session()
        await receive(session)
        await session.send(welcome())
        command = TaskSpec.model_validate(
            {"task_id": "c", "type": "command", "config": {"argv": ["true"]}}
        )
        await session.send(
            encode(Assign(assignments=[Assignment(attempt_id=3, attempt=1, task=command)]))
        )
        reject = await receive(session)
        assert reject.type.value == "reject"
        assert reject.attempt_id == 3
        assert "command" in reject.reason
        end(session)
    finally:
        agent.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)
