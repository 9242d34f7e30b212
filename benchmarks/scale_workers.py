"""Many protocol-correct simulated workers in one process, for benchmarks/fleet_scale.py.

Each :class:`SimulatedWorker` is one worker as the coordinator sees it: its
own WebSocket connection (``testfleet.worker.websocket_channel``, the real
agent's connector, with its worker token), a real ``hello`` with
capabilities, a heartbeat every ``heartbeat_interval_seconds`` the welcome
names, and the worker side of the exchange in ``testfleet.protocol``: it
accepts every assignment, finishes a ``simulated`` task after its
``duration_seconds`` (no child process: the point is the coordinator's load,
not the worker's), keeps each result until it is acknowledged, and after a
lost connection reconnects with the agent's jittered backoff
(``worker/backoff.py``), naming its held results and running attempts in the
hello and sending the held results again, as ``WorkerAgent`` does.

What it leaves out of the real agent: child processes, log streaming, load
sampling (heartbeats carry an idle load), test reports, the drain and bye
dance. Nothing is hand-written JSON: frames are the protocol's messages
through its codec.

Run by fleet_scale.py as ``python benchmarks/scale_workers.py URL FIRST COUNT
SLOTS TOKENS_FILE`` (the file maps every worker id of the run to its token;
this process hosts COUNT of them, from FIRST in sorted order); it runs until
SIGTERM, then prints one JSON line of counts (connections made, connection
failures, results sent and acked).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from testfleet.domain.enums import HardwareKind, ResultStatus, TaskType
from testfleet.domain.hardware import CpuInfo, WorkerCapabilities
from testfleet.domain.result import SimulationStatus, TaskResult
from testfleet.protocol.channel import Channel, ChannelClosed, ConnectFailed
from testfleet.protocol.codec import ProtocolError, decode, encode
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Ack,
    Assign,
    Assignment,
    AttemptResult,
    Cancel,
    Error,
    Heartbeat,
    Hello,
    Message,
    ProtocolErrorCode,
    Result,
    Welcome,
)
from testfleet.worker.agent_settings import channel_url
from testfleet.worker.backoff import backoff_delay
from testfleet.worker.websocket_channel import WebSocketConnector

#: The agent's backoff bounds (AgentSettings' defaults).
BACKOFF_BASE = 0.25
BACKOFF_CAP = 5.0
WELCOME_TIMEOUT = 60.0


def capabilities() -> WorkerCapabilities:
    return WorkerCapabilities(
        hostname="scale-host",
        os="Linux",
        python_version="3.11",
        cpu=CpuInfo(logical_cores=4),
        memory_gb=16.0,
        hardware=[HardwareKind.CPU],
        task_types=[TaskType.SIMULATED],
    )


@dataclass
class Counts:
    """What the workers of one process did, printed at the end."""

    connections: int = 0
    connect_failures: int = 0
    sessions_lost: int = 0
    results_sent: int = 0
    results_acked: int = 0
    resent_after_reconnect: int = 0


@dataclass
class SimulatedWorker:
    """One simulated worker (see the module docstring)."""

    url: str
    worker_id: str
    slots: int
    connector: WebSocketConnector
    caps: WorkerCapabilities
    counts: Counts
    rng: random.Random
    session_key: str = field(default_factory=lambda: secrets.token_hex(16))
    #: Attempts being "run": attempt id -> its task id.
    running: dict[int, str] = field(default_factory=dict)
    #: Results not yet acknowledged, by attempt id.
    held: dict[int, AttemptResult] = field(default_factory=dict)
    stopping: bool = False
    _outbox: asyncio.Queue[Message] | None = None

    async def run(self) -> None:
        failures = 0
        while not self.stopping:
            try:
                async with self.connector.connect(self.url) as channel:
                    self.counts.connections += 1
                    failures = 0
                    await self._serve(channel)
            except ConnectFailed:
                self.counts.connect_failures += 1
            except (ChannelClosed, ProtocolError, TimeoutError, OSError):
                self.counts.sessions_lost += 1
            finally:
                self._outbox = None
            if self.stopping:
                return
            await asyncio.sleep(backoff_delay(failures, self.rng, BACKOFF_BASE, BACKOFF_CAP))
            failures += 1

    async def _serve(self, channel: Channel) -> None:
        hello = Hello(
            protocol_version=PROTOCOL_VERSION,
            worker_id=self.worker_id,
            session_key=self.session_key,
            capabilities=self.caps,
            slots=self.slots,
            running_attempts=sorted(self.running),
            held_results=sorted(self.held),
        )
        await channel.send(encode(hello))
        welcome = decode(await asyncio.wait_for(channel.receive(), WELCOME_TIMEOUT))
        if isinstance(welcome, Error):
            raise ProtocolError(welcome.code, welcome.message)
        if not isinstance(welcome, Welcome):
            raise ProtocolError(
                ProtocolErrorCode.UNKNOWN_MESSAGE, f"expected welcome, got {welcome.type}"
            )
        for attempt_id in welcome.cancel_attempts:
            self.running.pop(attempt_id, None)
        outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox = outbox
        if self.held:
            # Everything not yet acknowledged goes again (the agent's rule).
            self.counts.resent_after_reconnect += len(self.held)
            self._send(Result(results=list(self.held.values())))
        sender = asyncio.create_task(self._send_loop(channel, outbox))
        beats = asyncio.create_task(self._heartbeats(welcome.heartbeat_interval_seconds))
        try:
            while True:
                try:
                    frame = await channel.receive()
                except ChannelClosed as exc:
                    if exc.clean and self.stopping:
                        return
                    raise
                self._handle(decode(frame))
        finally:
            sender.cancel()
            beats.cancel()

    def _send(self, message: Message) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(message)

    async def _send_loop(self, channel: Channel, outbox: asyncio.Queue[Message]) -> None:
        with contextlib.suppress(ChannelClosed):
            while True:
                await channel.send(encode(await outbox.get()))

    async def _heartbeats(self, interval: float) -> None:
        # A random first beat: a thousand workers that connected together
        # would otherwise beat together for ever.
        await asyncio.sleep(self.rng.uniform(0, interval))
        while True:
            self._send(Heartbeat(running_attempts=sorted(self.running)))
            await asyncio.sleep(interval)

    def _handle(self, message: Message) -> None:
        match message:
            case Assign(assignments=assignments):
                self._send(Accept(attempt_ids=[a.attempt_id for a in assignments]))
                now_done = []
                for assignment in assignments:
                    self.running[assignment.attempt_id] = assignment.task.task_id
                    duration = float(assignment.task.config.get("duration_seconds") or 0.0)
                    if duration > 0:
                        asyncio.get_running_loop().call_later(duration, self._finish, [assignment])
                    else:
                        now_done.append(assignment)
                if now_done:
                    self._finish(now_done)
            case Ack(attempt_ids=attempt_ids):
                for attempt_id in attempt_ids:
                    if self.held.pop(attempt_id, None) is not None:
                        self.counts.results_acked += 1
            case Cancel(attempt_ids=attempt_ids):
                for attempt_id in attempt_ids:
                    self.running.pop(attempt_id, None)
            case Error(code=code, message=text):
                raise ProtocolError(code, text)
            case _:
                pass  # drain, welcome again: nothing a simulated worker acts on

    def _finish(self, assignments: list[Assignment]) -> None:
        results = []
        for assignment in assignments:
            if self.running.pop(assignment.attempt_id, None) is None:
                continue  # cancelled meanwhile
            duration = float(assignment.task.config.get("duration_seconds") or 0.0)
            result = AttemptResult(
                attempt_id=assignment.attempt_id,
                result=TaskResult(
                    task_id=assignment.task.task_id,
                    worker_id=self.worker_id,
                    status=ResultStatus.COMPLETED,
                    execution_time_seconds=duration,
                    simulation_status=SimulationStatus(is_simulated=True),
                ),
            )
            self.held[assignment.attempt_id] = result
            results.append(result)
        if results:
            self.counts.results_sent += len(results)
            # Not connected: held, and sent after the next welcome.
            self._send(Result(results=results))


async def host(url: str, first: int, count: int, slots: int, tokens: dict[str, str]) -> Counts:
    counts = Counts()
    caps = capabilities()
    # The tokens file names every worker of the run (fleet_scale.py's ids sort
    # in number order); this process hosts ``count`` of them from ``first``.
    ids = sorted(tokens)[first : first + count]
    workers = [
        SimulatedWorker(
            url=channel_url(url),
            worker_id=name,
            slots=slots,
            connector=WebSocketConnector(token=tokens[name], open_timeout=60.0),
            caps=caps,
            counts=counts,
            rng=random.Random(name),
        )
        for name in ids
    ]
    loop = asyncio.get_running_loop()
    runners: list[asyncio.Task[None]] = []

    def stop() -> None:
        for worker in workers:
            worker.stopping = True
        for runner in runners:
            runner.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    for worker in workers:
        runners.append(asyncio.create_task(worker.run()))
        # Connections opened a few at a time, as machines booting would.
        await asyncio.sleep(0.002)
    for outcome in await asyncio.gather(*runners, return_exceptions=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            print(f"a worker failed: {outcome!r}", file=sys.stderr, flush=True)
    return counts


def main() -> None:
    url, first, count, slots, tokens_file = sys.argv[1:6]
    tokens = json.loads(Path(tokens_file).read_text())
    counts = asyncio.run(host(url, int(first), int(count), int(slots), tokens))
    print(json.dumps(counts.__dict__), flush=True)


if __name__ == "__main__":
    main()
