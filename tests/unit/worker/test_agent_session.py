"""The worker agent against a scripted coordinator over in-memory channels.

The fake coordinator takes each channel the agent opens and speaks the
protocol from a script, so the agent's own behaviour is pinned down exactly:
what its hello says, that it accepts and runs assignments, and that a result
stays held and is sent again after a reconnect until it is acknowledged. The
agent runs on an autojumping fake clock: its backoff and heartbeats take no
wall time. (The WebSocket connector itself is tested against real loopback
servers in ``test_agent_connection_messages.py``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from testfleet.clock import wait_within
from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import GpuInfo, WorkerCapabilities
from testfleet.domain.task import TaskSpec
from testfleet.protocol.channel import Channel
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
from testfleet.testing import FakeClock, MemoryConnector
from testfleet.worker.agent import AgentSettings, WorkerAgent, WorkerRefusedError
from testfleet.worker.executors.registry import default_executors

CAPS = WorkerCapabilities(
    hostname="h",
    os="Linux",
    python_version="3.11",
    hardware=[HardwareKind.CPU],
    task_types=[TaskType.COMMAND, TaskType.SIMULATED],
)


T = TypeVar("T")
#: Fake seconds a step may take before the test fails instead of hanging.
STEP_LIMIT = 60.0


class ScriptedCoordinator:
    """Accepts connections and hands each to the next scripted session; the test
    decides when each ends (:func:`end`)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sessions: asyncio.Queue[Channel] = asyncio.Queue()
        self.connector = MemoryConnector(self.sessions.put)

    async def within(self, step: Awaitable[T]) -> T:
        return await wait_within(self.clock, step, STEP_LIMIT)

    async def next_session(self) -> Channel:
        return await self.within(self.sessions.get())


async def receive(coordinator: ScriptedCoordinator, session: Channel) -> Any:
    return decode(await coordinator.within(session.receive()))


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


async def end(session: Channel) -> None:
    await session.close()


@pytest.fixture
async def coordinator() -> AsyncIterator[ScriptedCoordinator]:
    fake = ScriptedCoordinator(FakeClock())
    async with fake.clock.autojump():
        yield fake
        await fake.connector.close()


def make_agent(coordinator: ScriptedCoordinator, tmp_path: Path) -> WorkerAgent:
    return WorkerAgent(
        AgentSettings(
            coordinator_url="http://coordinator.test:8700",
            worker_id="w1",
            slots=2,
            work_dir=tmp_path,
        ),
        CAPS,
        default_executors(),
        rng=random.Random(1),
        clock=coordinator.clock,
        connector=coordinator.connector,
    )


def simulated(task_id: str) -> TaskSpec:
    return TaskSpec.model_validate({"task_id": task_id, "type": "simulated"})


async def test_result_is_held_and_resent_until_acknowledged(
    coordinator: ScriptedCoordinator, tmp_path: Path
) -> None:
    agent = make_agent(coordinator, tmp_path)
    running = asyncio.create_task(agent.run())
    try:
        first = await coordinator.next_session()
        hello = await receive(coordinator, first)
        assert isinstance(hello, Hello)
        assert hello.worker_id == "w1"
        assert hello.slots == 2
        assert hello.running_attempts == []
        assert hello.held_results == []
        await first.send(welcome())
        await first.send(
            encode(Assign(assignments=[Assignment(attempt_id=7, attempt=1, task=simulated("a"))]))
        )
        accept = await receive(coordinator, first)
        assert accept == Accept(attempt_ids=[7])
        result = await receive(coordinator, first)
        assert isinstance(result, Result)
        assert [r.attempt_id for r in result.results] == [7]
        assert result.results[0].result.simulation_status.is_simulated is True
        # The coordinator goes away before acknowledging.
        await end(first)

        second = await coordinator.next_session()
        hello = await receive(coordinator, second)
        assert isinstance(hello, Hello)
        assert hello.held_results == [7]  # still held
        assert hello.session_key == agent.session_key  # the same process
        await second.send(welcome())
        resent = await receive(coordinator, second)
        assert isinstance(resent, Result)
        assert resent.results == result.results  # the same result, unchanged
        await second.send(encode(Ack(attempt_ids=[7])))
        for _ in range(100):
            if agent.held_count == 0:
                break
            await asyncio.sleep(0)
        assert agent.held_count == 0
        await end(second)
    finally:
        agent.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await coordinator.within(running)


async def test_refusal_for_a_taken_id_is_retried_until_the_id_is_free(
    coordinator: ScriptedCoordinator, tmp_path: Path
) -> None:
    """The id's other connection will be declared gone: the agent backs off and
    says hello again, as the same process, and is welcomed then."""
    agent = make_agent(coordinator, tmp_path)
    running = asyncio.create_task(agent.run())
    try:
        for _ in range(3):
            session = await coordinator.next_session()
            await receive(coordinator, session)
            await session.send(
                encode(
                    Error(code=ProtocolErrorCode.WORKER_ID_IN_USE, message="worker id 'w1' taken")
                )
            )
            await end(session)
            assert not running.done()
        session = await coordinator.next_session()
        hello = await receive(coordinator, session)
        assert isinstance(hello, Hello)
        assert hello.session_key == agent.session_key
        await session.send(welcome())
        await coordinator.within(agent.connected.wait())
        await end(session)
    finally:
        agent.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await coordinator.within(running)


async def test_refusal_as_unauthorized_stops_the_agent(
    coordinator: ScriptedCoordinator, tmp_path: Path
) -> None:
    agent = make_agent(coordinator, tmp_path)
    running = asyncio.create_task(agent.run())
    session = await coordinator.next_session()
    await receive(coordinator, session)
    await session.send(
        encode(Error(code=ProtocolErrorCode.UNAUTHORIZED, message="worker 'w1' was revoked"))
    )
    with pytest.raises(WorkerRefusedError, match="revoked"):
        await coordinator.within(running)
    await end(session)


async def test_assignment_of_an_unknown_type_is_rejected(
    coordinator: ScriptedCoordinator, tmp_path: Path
) -> None:
    agent = make_agent(coordinator, tmp_path)
    agent.executors = {TaskType.SIMULATED: agent.executors[TaskType.SIMULATED]}
    running = asyncio.create_task(agent.run())
    try:
        session = await coordinator.next_session()
        await receive(coordinator, session)
        await session.send(welcome())
        command = TaskSpec.model_validate(
            {"task_id": "c", "type": "command", "config": {"argv": ["true"]}}
        )
        await session.send(
            encode(Assign(assignments=[Assignment(attempt_id=3, attempt=1, task=command)]))
        )
        reject = await receive(coordinator, session)
        assert reject.type.value == "reject"
        assert reject.attempt_id == 3
        assert "command" in reject.reason
        await end(session)
    finally:
        agent.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await coordinator.within(running)


async def test_heartbeats_read_nvml_only_where_the_probe_found_nvidia_gpus(
    tmp_path: Path,
) -> None:
    settings = AgentSettings(
        coordinator_url="http://coordinator.test:8700", worker_id="w1", work_dir=tmp_path
    )
    cpu_only = WorkerAgent(settings, CAPS, default_executors())
    assert not cpu_only._sample_in_thread
    assert "gpu_utilization_percent" not in cpu_only._sample_load()
    h100 = GpuInfo(index=0, vendor="nvidia", name="H100", memory_gb=80)
    gpu = WorkerAgent(settings, CAPS.model_copy(update={"gpus": [h100]}), default_executors())
    # Sampled in a thread: NVML's start can be slow and must not stall the loop.
    assert gpu._sample_in_thread
