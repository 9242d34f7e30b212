"""A whole fleet in one process: coordinator state and loop, worker agents, no sockets.

Callers: scenario tests (a lost connection, a reconnect storm, a dropped ack),
which need a real coordinator and real agents but want them fast and
deterministic. The coordinator is the real :class:`CoordinatorState` and
:class:`CoordinatorLoop` over a real :class:`~testfleet.store.Store` (DuckDB,
committed inline rather than in a thread); each agent is a real
:class:`WorkerAgent` whose connector is a :class:`MemoryConnector` attached
to the loop by :func:`serve_channel`, the same session code the WebSocket
route runs. Everything waits on one :class:`FakeClock`, which autojumps while
the fleet runs: heartbeats, backoff and timeouts take no wall time, and the
same test makes the same moves every run.

Executors must not wait on real time either. Each agent hands the fleet's
clock to its executors (``ExecutionContext.clock``), so a ``simulated`` task
of 30 seconds takes 30 fake seconds and no wall time; an executor that runs a
real child process (command, test, benchmark) lives on real time and does not
belong in a fleet on a fake clock; anything else a test injects should wait on
events it controls or on ``context.clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testfleet.coordinator.connections import ConnectionRegistry
from testfleet.coordinator.loop import CoordinatorLoop
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.state import CoordinatorState
from testfleet.coordinator.worker_channel import serve_channel
from testfleet.coordinator.worker_identity import (
    CredentialKind,
    PresentedCredentials,
    WorkerCredential,
)
from testfleet.domain.enums import Codec, HardwareKind, TaskType
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.protocol.channel import Channel
from testfleet.security.audit import AuditEvent
from testfleet.store import Store
from testfleet.testing.fake_clock import FakeClock
from testfleet.testing.memory_channel import CodecsChannel, MemoryConnector
from testfleet.worker.agent import AgentSettings, WorkerAgent
from testfleet.worker.executors.base import Executor
from testfleet.worker.executors.registry import default_executors
from testfleet.worker.hardware import LoadSample


def in_process_token(worker_id: str, issued_at: float) -> WorkerCredential:
    """A worker-token credential for ``worker_id`` issued at ``issued_at`` (fake time)."""
    return WorkerCredential(
        kind=CredentialKind.TOKEN,
        worker_id=worker_id,
        credential_id=f"tok-in-process-{worker_id}-{issued_at:g}",
        issued_at=issued_at,
    )


#: How often (fake seconds) :meth:`InProcessFleet.wait_until` looks again.
POLL_SECONDS = 0.05


async def _commit_inline(function: Callable[..., object], *args: Any) -> None:
    """The loop's offload, without a thread: the clock must not jump under a commit."""
    function(*args)


def _quiet_load() -> LoadSample:
    return {"cpu_percent": 0.0, "memory_percent": 0.0, "load_average_1m": 0.0}


@dataclass
class FleetWorker:
    """One agent of the fleet, its connector, and when it connected (fake time)."""

    agent: WorkerAgent
    connector: MemoryConnector
    runner: asyncio.Task[None]
    connected_at: list[float] = field(default_factory=list)


class InProcessFleet:
    """A running coordinator loop plus the agents :meth:`add_worker` starts; made by
    :func:`in_process_fleet`."""

    def __init__(self, store: Store, clock: FakeClock, settings: CoordinatorSettings) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        recovered = store.load_state()
        state = CoordinatorState(
            settings, clock.now(), recovered, store.all_task_ids(), store.worker_revocations()
        )
        self.loop = CoordinatorLoop(
            state, store, clock, ConnectionRegistry(), offload=_commit_inline
        )
        self.workers: dict[str, FleetWorker] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.loop.run(), name="fleet-loop"))
        self._tasks.append(
            asyncio.create_task(
                self.loop.tick_forever(self.settings.tick_seconds), name="fleet-ticker"
            )
        )

    def add_worker(
        self,
        worker_id: str,
        *,
        slots: int = 1,
        executors: dict[TaskType, Executor] | None = None,
        work_dir: Path | None = None,
        seed: int = 0,
        credential: WorkerCredential | None = None,
        codec: Codec = Codec.JSON,
        carries: tuple[Codec, ...] | None = None,
    ) -> FleetWorker:
        """Start an agent connected to this fleet's loop; ``seed`` makes its backoff
        jitter reproducible. ``credential``: what vouches for it on every connect
        (default: a worker token for ``worker_id`` issued now, as a real fleet
        would hand it; ``in_process_token`` makes another). ``codec``: what the
        agent asks for; ``carries``: the codecs its channel carries (None: a
        WebSocket's; every codec stands for gRPC)."""
        presented = PresentedCredentials.of(
            credential or in_process_token(worker_id, self.clock.now())
        )
        executors = executors if executors is not None else default_executors()
        capabilities = WorkerCapabilities(
            hostname=worker_id,
            os="Linux",
            python_version="3.11",
            hardware=[HardwareKind.CPU],
            task_types=list(executors),
        )
        connected_at: list[float] = []

        async def accept(channel: Channel) -> None:
            connected_at.append(self.clock.now())
            served = channel if carries is None else CodecsChannel(channel, carries)
            await serve_channel(served, self.loop, credentials=presented, audit=self.store_audit)

        connector = MemoryConnector(accept)
        agent = WorkerAgent(
            AgentSettings(
                coordinator_url="http://in-process.fleet",
                worker_id=worker_id,
                slots=slots,
                codec=codec,
                work_dir=work_dir or Path("/nonexistent/testfleet-in-process"),
            ),
            capabilities,
            executors,
            rng=random.Random(seed),
            clock=self.clock,
            connector=connector,
            load_sampler=_quiet_load,
        )
        runner = asyncio.create_task(agent.run(), name=f"agent-{worker_id}")
        worker = FleetWorker(agent, connector, runner, connected_at)
        self.workers[worker_id] = worker
        return worker

    async def store_audit(self, events: Sequence[AuditEvent]) -> None:
        """Where the worker channel records refusals: the fleet's store (inline,
        like its commits)."""
        self.store.record_audit(events)

    async def wait_until(self, condition: Callable[[], bool], *, within: float = 300.0) -> None:
        """Return once ``condition()`` holds; :class:`TimeoutError` after ``within``
        fake seconds (a scenario that cannot finish fails instead of hanging)."""
        deadline = self.clock.now() + within
        while not condition():
            if self.loop.failure is not None:
                raise RuntimeError("the coordinator loop failed") from self.loop.failure
            for worker in self.workers.values():
                if worker.runner.done():
                    worker.runner.result()  # an agent that died says why
            if self.clock.now() >= deadline:
                raise TimeoutError(f"not true within {within:g} fake seconds: {condition}")
            await self.clock.sleep(POLL_SECONDS)

    async def stop(self) -> None:
        """Stop the agents, then the loop (what was applied is committed)."""
        for worker in self.workers.values():
            worker.agent.stop()
        for worker in self.workers.values():
            with contextlib.suppress(Exception):
                await worker.runner
            await worker.connector.close()
        self.loop.stop()
        for task in reversed(self._tasks):
            if task.get_name() == "fleet-ticker":
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.loop.connections.close_all()


@contextlib.asynccontextmanager
async def in_process_fleet(
    db_path: str | Path,
    *,
    settings: CoordinatorSettings | None = None,
    clock: FakeClock | None = None,
) -> AsyncIterator[InProcessFleet]:
    """A coordinator over the DuckDB file ``db_path`` on an autojumping fake clock;
    add workers with :meth:`InProcessFleet.add_worker`. Everything is stopped, and
    the store closed, on the way out."""
    clock = clock or FakeClock()
    with Store(db_path) as store:
        fleet = InProcessFleet(store, clock, settings or CoordinatorSettings())
        async with clock.autojump():
            fleet.start()
            try:
                yield fleet
            finally:
                await fleet.stop()
