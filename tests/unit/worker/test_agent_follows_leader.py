"""A worker given several coordinator addresses follows the leader (issue 13):
a standby's close code 4010 names the leader, a dead address is passed over,
and the backoff comes only after a full round. The leader is the real
coordinator loop of the in-process fleet (memory channels, autojumping fake
clock); standbys and dead addresses are played by the connector below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testfleet.coordinator.worker_channel import serve_channel
from testfleet.coordinator.worker_identity import PresentedCredentials
from testfleet.domain.enums import HardwareKind, TaskStatus
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.task import TaskSpec
from testfleet.protocol.channel import Channel, CloseCode, ConnectFailed
from testfleet.protocol.codec import decode
from testfleet.protocol.messages import Hello
from testfleet.testing import FakeClock
from testfleet.testing.fleet import InProcessFleet, in_process_fleet, in_process_token
from testfleet.testing.memory_channel import MemoryConnector, channel_pair
from testfleet.worker.agent import AgentSettings, WorkerAgent
from testfleet.worker.backoff import backoff_delay
from testfleet.worker.executors.registry import default_executors

A, B, C = "http://a.test:8700", "http://b.test:8700", "http://c.test:8700"


def ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/api/v1/workers/connect"


@dataclass
class Standby:
    """An address whose coordinator is a standby naming ``leader`` ('' = nobody)."""

    leader: str


LEADER = "leader"


class Coordinators:
    """A connector to several addresses, each dead, a standby or the leader (the
    in-process fleet's loop), as the test sets :attr:`roles`; every connect is
    recorded with its fake time."""

    def __init__(self, fleet: InProcessFleet | None, clock: FakeClock) -> None:
        self.roles: dict[str, Standby | str] = {}
        self.tried: list[tuple[str, float]] = []
        self._clock = clock
        self.leader: MemoryConnector | None = None
        if fleet is not None:
            presented = PresentedCredentials.of(in_process_token("w1", clock.now()))

            async def accept(channel: Channel) -> None:
                await serve_channel(
                    channel, fleet.loop, credentials=presented, audit=fleet.store_audit
                )

            self.leader = MemoryConnector(accept)

    @contextlib.asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Channel]:
        self.tried.append((url, self._clock.now()))
        role = self.roles.get(url)
        if role is None:
            raise ConnectFailed("connection refused: nothing listens there")
        if isinstance(role, Standby):
            # What a standby does: accept, then close with 4010.
            worker, coordinator = channel_pair(url)
            await coordinator.close(CloseCode.NOT_LEADER, reason=role.leader)
            yield worker
            return
        assert self.leader is not None
        async with self.leader.connect(url) as channel:
            yield channel


def agent_for(addresses: str, connector: Coordinators, clock: FakeClock) -> WorkerAgent:
    return WorkerAgent(
        AgentSettings(coordinator_url=addresses, worker_id="w1", work_dir=Path("/nonexistent")),
        WorkerCapabilities(
            hostname="w1",
            os="Linux",
            python_version="3.11",
            hardware=[HardwareKind.CPU],
            task_types=list(default_executors()),
        ),
        default_executors(),
        rng=random.Random(5),
        clock=clock,
        connector=connector,
        load_sampler=lambda: {"cpu_percent": 0.0, "memory_percent": 0.0, "load_average_1m": 0.0},
    )


def simulated(task_id: str, seconds: float) -> TaskSpec:
    return TaskSpec.model_validate(
        {"task_id": task_id, "type": "simulated", "config": {"duration_seconds": seconds}}
    )


def completed(fleet: InProcessFleet, task_id: str) -> bool:
    task = fleet.store.get_task(task_id)
    return task is not None and task.status is TaskStatus.COMPLETED


async def test_a_dead_address_then_a_standby_lead_to_an_unlisted_leader_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="testfleet.worker.connection_report")
    async with in_process_fleet(tmp_path / "fleet.duckdb") as fleet:
        connector = Coordinators(fleet, fleet.clock)
        connector.roles = {ws(B): Standby(C), ws(C): LEADER}
        started = fleet.clock.now()
        agent = agent_for(f"{A},{B}", connector, fleet.clock)
        runner = asyncio.create_task(agent.run())
        try:
            await fleet.wait_until(agent.connected.is_set)
            await fleet.loop.submit([simulated("t", 1.0)])
            await fleet.wait_until(lambda: completed(fleet, "t"))
        finally:
            agent.stop()
            await runner
    assert [url for url, _ in connector.tried[:3]] == [ws(A), ws(B), ws(C)]
    # No pause: a full round had not failed.
    assert [at for _, at in connector.tried[:3]] == [started] * 3
    assert f"following the leader at {C}" in caplog.text


async def test_after_a_failover_the_worker_keeps_its_attempt_and_finishes_it_at_the_new_leader(
    tmp_path: Path,
) -> None:
    async with in_process_fleet(tmp_path / "fleet.duckdb") as fleet:
        connector = Coordinators(fleet, fleet.clock)
        connector.roles = {ws(A): LEADER, ws(B): Standby(A)}
        agent = agent_for(f"{A},{B}", connector, fleet.clock)
        runner = asyncio.create_task(agent.run())
        try:
            await fleet.wait_until(agent.connected.is_set)
            await fleet.loop.submit([simulated("long", 30.0)])
            await fleet.wait_until(
                lambda: (
                    (task := fleet.loop.state.tasks.get("long")) is not None
                    and task.status is TaskStatus.RUNNING
                )
            )
            # A loses the lead (its process is gone); B leads now, and A, back
            # as a standby, names it.
            connector.roles = {ws(A): Standby(B), ws(B): LEADER}
            assert connector.leader is not None
            connector.leader.links[0].worker.sever()
            await fleet.wait_until(lambda: completed(fleet, "long"))
            await fleet.wait_until(lambda: agent.held_count == 0)
            attempts = fleet.store.get_attempts("long")
            results = fleet.store.get_results("long")
        finally:
            agent.stop()
            await runner
    assert [url for url, _ in connector.tried] == [ws(A), ws(A), ws(B)]
    assert connector.tried[2][1] == connector.tried[1][1]  # 4010 -> the leader at once
    hello = decode(connector.leader.links[1].worker.sent[0])
    assert isinstance(hello, Hello)
    assert len(hello.running_attempts) == 1  # the attempt kept running across the switch
    assert len(attempts) == 1  # never requeued: the worker was back in time
    assert len(results) == 1


async def test_a_leader_that_falls_silent_is_left_for_the_next_address_at_once(
    tmp_path: Path,
) -> None:
    """A hung leader (no pongs) may never come back while a standby takes its
    lease: the worker goes to its next address without a pause, instead of
    retrying the silent one first as it does after a plain lost connection."""
    async with in_process_fleet(tmp_path / "fleet.duckdb") as fleet:
        connector = Coordinators(fleet, fleet.clock)
        connector.roles = {ws(A): LEADER}
        agent = agent_for(f"{A},{B}", connector, fleet.clock)
        runner = asyncio.create_task(agent.run())
        try:
            await fleet.wait_until(agent.connected.is_set)
            connector.roles = {ws(B): LEADER}  # A hangs for good; B took the lease
            assert connector.leader is not None
            silent_at = fleet.clock.now()
            connector.leader.links[0].worker.fall_silent()
            await fleet.wait_until(lambda: len(connector.leader.links) == 2)  # type: ignore[union-attr]
            await fleet.wait_until(agent.connected.is_set)
        finally:
            agent.stop()
            await runner
    assert connector.tried == [(ws(A), connector.tried[0][1]), (ws(B), silent_at)]


async def test_the_backoff_comes_only_after_a_full_round() -> None:
    clock = FakeClock()
    connector = Coordinators(None, clock)
    agent = agent_for(f"{A},{B}", connector, clock)
    async with clock.autojump():
        runner = asyncio.create_task(agent.run())
        while len(connector.tried) < 6:
            await clock.sleep(0.01)
        agent.stop()
        await runner
    rng = random.Random(5)
    base, cap = agent.settings.backoff_base_seconds, agent.settings.backoff_cap_seconds
    first, second = backoff_delay(0, rng, base, cap), backoff_delay(1, rng, base, cap)
    urls = [url for url, _ in connector.tried[:6]]
    times = [at - connector.tried[0][1] for _, at in connector.tried[:6]]
    assert urls == [ws(A), ws(B)] * 3
    assert times == pytest.approx([0, 0, first, first, first + second, first + second])


async def test_standbys_naming_nobody_are_rounds_with_backoff_not_a_spin() -> None:
    clock = FakeClock()
    connector = Coordinators(None, clock)
    connector.roles = {ws(A): Standby(""), ws(B): Standby("")}
    agent = agent_for(f"{A},{B}", connector, clock)
    async with clock.autojump():
        runner = asyncio.create_task(agent.run())
        while len(connector.tried) < 4:
            await clock.sleep(0.01)
        agent.stop()
        await runner
    times = [at for _, at in connector.tried[:4]]
    assert times[0] == times[1] < times[2] == times[3]


async def test_the_websocket_channel_hands_on_the_close_code_and_reason() -> None:
    """A real socket on loopback: what the agent reads 4010's leader from."""
    from websockets.asyncio.server import ServerConnection, serve

    from testfleet.protocol.channel import ChannelClosed
    from testfleet.worker.websocket_channel import WebSocketConnector

    async def standby(socket: ServerConnection) -> None:
        await socket.close(CloseCode.NOT_LEADER, B)

    async with serve(standby, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with WebSocketConnector().connect(f"ws://127.0.0.1:{port}/x") as channel:
            with pytest.raises(ChannelClosed) as closed:
                await channel.receive()
    assert closed.value.code == CloseCode.NOT_LEADER
    assert closed.value.reason == B
    assert not closed.value.clean


async def test_the_websocket_channel_marks_a_coordinator_that_answers_no_ping_silent() -> None:
    """A real socket on loopback to a server that finishes the handshake and then
    reads nothing (a paused process): the keepalive gives up and says so."""
    import base64
    import hashlib

    from testfleet.protocol.channel import ChannelClosed
    from testfleet.worker.websocket_channel import WebSocketConnector

    paused: list[asyncio.StreamWriter] = []

    async def handshake_then_nothing(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        paused.append(writer)  # held open, never read again

    server = await asyncio.start_server(handshake_then_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connector = WebSocketConnector(ping_interval=0.05, ping_timeout=0.1)
    try:
        async with connector.connect(f"ws://127.0.0.1:{port}/x") as channel:
            with pytest.raises(ChannelClosed) as closed:
                await channel.receive()
    finally:
        for writer in paused:
            writer.close()
        server.close()
        await server.wait_closed()
    assert closed.value.silent
    assert not closed.value.clean
