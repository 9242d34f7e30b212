"""The loop's promise: nothing is sent or answered before it is committed.

A real Store (DuckDB in memory) wrapped to record when commits happen, and a
registry whose sockets record what they were sent; the loop runs on the test's
event loop with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from testfleet.coordinator.connections import ConnectionRegistry
from testfleet.coordinator.events import Accepted, WorkerConnected
from testfleet.coordinator.loop import CoordinatorLoop, CoordinatorUnavailableError
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.state import CoordinatorState
from testfleet.domain.enums import HardwareKind, TaskStatus, TaskType
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.task import TaskSpec
from testfleet.protocol.channel import CloseCode
from testfleet.protocol.codec import decode
from testfleet.protocol.messages import PROTOCOL_VERSION, Assign, Hello, Welcome
from testfleet.store import Store, StoreError
from testfleet.store.store import PreparedBatch
from testfleet.testing import FakeClock


class RecordingStore(Store):
    """A real store that logs each commit, or fails on demand."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(":memory:")
        self.log = log
        self.fail = False

    def commit(
        self,
        prepared: PreparedBatch,
        *,
        between_statements: Callable[[], None] | None = None,
    ) -> None:
        if self.fail:
            raise StoreError("disk full (injected)")
        super().commit(prepared, between_statements=between_statements)
        self.log.append(f"commit tasks={len(prepared.batch.tasks)}")


class RecordingSocket:
    """A :class:`~testfleet.protocol.channel.Channel` that records what it is sent."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.frames: list[str | bytes] = []

    async def send(self, frame: str | bytes) -> None:
        self.frames.append(frame)
        if isinstance(frame, str):
            self.log.append(f"send {decode(frame).type.value}")

    async def receive(self) -> str | bytes:
        raise AssertionError("the registry never receives")

    async def close(self, code: CloseCode = CloseCode.NORMAL) -> None:
        self.log.append("close")


def hello() -> Hello:
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id="w1",
        session_key="k" * 16,
        capabilities=WorkerCapabilities(
            hostname="h",
            os="Linux",
            python_version="3.11",
            hardware=[HardwareKind.CPU],
            task_types=[TaskType.SIMULATED],
        ),
        slots=1,
    )


async def inline(function: Any, *args: Any) -> None:
    """Run the commit on the loop itself: deterministic, no thread, no waiting."""
    function(*args)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
async def running(log: list[str]) -> Any:
    store = RecordingStore(log)
    clock = FakeClock()
    state = CoordinatorState(CoordinatorSettings(), clock.now())
    loop = CoordinatorLoop(state, store, clock, ConnectionRegistry(), offload=inline)
    runner = asyncio.create_task(loop.run())
    yield loop, store
    loop.stop()
    with contextlib.suppress(StoreError):
        await asyncio.wait_for(runner, 10)
    await loop.connections.close_all()
    store.close()


async def test_submission_is_answered_after_its_commit(
    running: tuple[CoordinatorLoop, RecordingStore], log: list[str]
) -> None:
    loop, store = running
    spec = TaskSpec.model_validate({"task_id": "a", "type": "simulated"})
    answer = await loop.submit([spec])
    assert answer == Accepted(["a"])
    assert log == ["commit tasks=1"]
    stored = store.get_task("a")
    assert stored is not None
    assert stored.status is TaskStatus.QUEUED


async def test_assignment_is_sent_only_after_it_is_durable(
    running: tuple[CoordinatorLoop, RecordingStore], log: list[str]
) -> None:
    loop, store = running
    socket = RecordingSocket(log)
    connection = loop.connections.open(socket)
    loop.post(WorkerConnected(connection, hello()))
    await settle()
    await loop.submit([TaskSpec.model_validate({"task_id": "a", "type": "simulated"})])
    await settle()
    kinds = [decode(f).type.value for f in socket.frames]
    assert kinds == ["welcome", "assign"]
    assert isinstance(decode(socket.frames[0]), Welcome)
    assign = decode(socket.frames[1])
    assert isinstance(assign, Assign)
    # Every send follows the commit that made it durable.
    assert log.index("send welcome") > 0
    assert log[log.index("send assign") - 1].startswith("commit")
    stored = store.get_task("a")
    assert stored is not None
    assert stored.status is TaskStatus.ASSIGNED
    assert stored.current_attempt_id == assign.assignments[0].attempt_id


async def test_a_failed_commit_answers_nothing_and_stops_the_loop(
    running: tuple[CoordinatorLoop, RecordingStore], log: list[str]
) -> None:
    loop, store = running
    store.fail = True
    with pytest.raises(CoordinatorUnavailableError, match="disk full"):
        await loop.submit([TaskSpec.model_validate({"task_id": "a", "type": "simulated"})])
    assert isinstance(loop.failure, StoreError)
    assert store.get_task("a") is None
    with pytest.raises(CoordinatorUnavailableError):
        loop.post(WorkerConnected(1, hello()))


async def test_the_ticker_ends_quietly_once_the_loop_has_failed(
    running: tuple[CoordinatorLoop, RecordingStore], log: list[str]
) -> None:
    # A tick after a storage failure used to end the ticker with the loop's
    # refusal, which the app's shutdown then raised again.
    loop, store = running
    store.fail = True
    with pytest.raises(CoordinatorUnavailableError):
        await loop.submit([TaskSpec.model_validate({"task_id": "a", "type": "simulated"})])
    await asyncio.wait_for(loop.tick_forever(0), 10)  # returns, raises nothing
