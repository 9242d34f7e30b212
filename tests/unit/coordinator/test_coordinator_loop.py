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
from testfleet.coordinator.events import Accepted, WorkerConnected, WorkerFrame
from testfleet.coordinator.loop import (
    RETRY_FIRST_SECONDS,
    RETRY_MAX_SECONDS,
    CoordinatorLoop,
    CoordinatorUnavailableError,
)
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.state import CoordinatorState
from testfleet.domain.enums import HardwareKind, TaskStatus, TaskType
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.task import TaskSpec
from testfleet.protocol.channel import CloseCode
from testfleet.protocol.codec import decode
from testfleet.protocol.messages import PROTOCOL_VERSION, Assign, Heartbeat, Hello, Welcome
from testfleet.store import Store, StoreError
from testfleet.store.store import PreparedBatch
from testfleet.testing import FakeClock


class RecordingStore(Store):
    """A real store that logs each commit, or fails on demand."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(":memory:")
        self.log = log
        self.fail = False
        #: Fail as a full disk does (retryable) until set back to False.
        self.full = False
        self.attempts = 0

    def commit(
        self,
        prepared: PreparedBatch,
        *,
        between_statements: Callable[[], None] | None = None,
    ) -> None:
        self.attempts += 1
        if self.fail:
            raise StoreError("disk full (injected)")
        if self.full:
            raise StoreError(
                "could not write: TransactionException: Failed to commit: Could not write "
                'file "x.db.wal": No space left on device',
                retryable=True,
            )
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
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def running(log: list[str], clock: FakeClock) -> Any:
    store = RecordingStore(log)
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


def spec(task_id: str) -> TaskSpec:
    return TaskSpec.model_validate({"task_id": task_id, "type": "simulated"})


async def test_a_full_disk_degrades_the_loop_and_it_resumes_once_a_retry_commits(
    running: tuple[CoordinatorLoop, RecordingStore], log: list[str], clock: FakeClock
) -> None:
    loop, store = running
    assert await loop.submit([spec("before")]) == Accepted(["before"])
    store.full = True
    held = asyncio.create_task(loop.submit([spec("held")]))
    await settle()
    # The turn could not commit: it is held, not answered, and nothing else is taken.
    assert not held.done()
    assert loop.degraded is not None
    assert "No space left on device" in loop.degraded
    assert loop.failure is None
    with pytest.raises(CoordinatorUnavailableError, match="free space") as refused:
        await loop.submit([spec("refused")])
    assert "No space left on device" in str(refused.value)
    # Retries follow the injected clock (doubling), never wall time.
    clock.advance(RETRY_FIRST_SECONDS)
    await settle()
    clock.advance(RETRY_FIRST_SECONDS * 2)
    await settle()
    assert loop.commit_retries == 2
    assert not held.done()
    assert store.get_task("held") is None
    store.full = False
    clock.advance(RETRY_FIRST_SECONDS * 4)
    await settle()
    # Answered only now that it is durable; requests are taken again.
    assert held.done()
    assert held.result() == Accepted(["held"])
    assert store.get_task("held") is not None
    assert store.get_task("before") is not None
    assert store.get_task("refused") is None
    assert loop.degraded is None
    assert await loop.submit([spec("after")]) == Accepted(["after"])


async def test_worker_frames_are_still_taken_while_degraded_and_sent_only_after_commit(
    running: tuple[CoordinatorLoop, RecordingStore], log: list[str], clock: FakeClock
) -> None:
    loop, store = running
    store.full = True
    socket = RecordingSocket(log)
    connection = loop.connections.open(socket)
    loop.post(WorkerConnected(connection, hello()))  # a worker event: not refused
    await settle()
    assert loop.degraded is not None
    assert socket.frames == []  # its welcome waits for the commit
    store.full = False
    clock.advance(RETRY_FIRST_SECONDS)
    await settle()
    assert [decode(f).type.value for f in socket.frames] == ["welcome"]
    assert loop.degraded is None


async def test_the_retry_backoff_is_capped(
    running: tuple[CoordinatorLoop, RecordingStore], clock: FakeClock
) -> None:
    loop, store = running
    store.full = True
    held = asyncio.create_task(loop.submit([spec("a")]))
    await settle()
    waits: list[float] = []
    for _ in range(8):
        deadline = clock.next_deadline
        assert deadline is not None
        waits.append(deadline - clock.now())
        clock.advance(waits[-1])
        await settle()
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, RETRY_MAX_SECONDS, RETRY_MAX_SECONDS, 30.0]
    store.full = False
    clock.advance(RETRY_MAX_SECONDS)
    await settle()
    assert held.result() == Accepted(["a"])


async def test_a_full_disk_at_shutdown_answers_the_held_turn_with_503(
    running: tuple[CoordinatorLoop, RecordingStore], clock: FakeClock
) -> None:
    loop, store = running
    store.full = True
    held = asyncio.create_task(loop.submit([spec("a")]))
    await settle()
    loop.stop()
    clock.advance(RETRY_FIRST_SECONDS)
    await settle()
    with pytest.raises(CoordinatorUnavailableError):
        await held
    assert store.get_task("a") is None


async def test_a_loop_cancelled_while_degraded_answers_the_held_turn_with_503(
    log: list[str], clock: FakeClock
) -> None:
    store = RecordingStore(log)
    store.full = True
    state = CoordinatorState(CoordinatorSettings(), clock.now())
    loop = CoordinatorLoop(state, store, clock, ConnectionRegistry(), offload=inline)
    runner = asyncio.create_task(loop.run())
    held = asyncio.create_task(loop.submit([spec("a")]))
    await settle()
    runner.cancel()  # the app's shutdown, past its grace
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    with pytest.raises(CoordinatorUnavailableError, match="No space left on device"):
        await held
    assert store.get_task("a") is None
    store.close()


class LagObserver:
    """Records what the loop reports to its observer (the app's Metrics)."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    def observe_batch(self, batch: Any) -> None:
        pass

    def observe_commit(self, seconds: float) -> None:
        pass

    def observe_heartbeat_lag(self, seconds: float) -> None:
        self.lags.append(seconds)


async def test_heartbeat_lag_is_measured_from_the_socket_read_to_the_turn(
    running: tuple[CoordinatorLoop, RecordingStore], log: list[str], clock: FakeClock
) -> None:
    # Issue 14's 1,000-worker fleet: the coordinator's own figure for how long
    # heartbeats wait in its queue (testfleet_heartbeat_lag_seconds).
    loop, _ = running
    observer = LagObserver()
    loop.observer = observer
    connection = loop.connections.open(RecordingSocket(log))
    loop.post(WorkerConnected(connection, hello()))
    await settle()
    read_at = clock.now()
    clock.advance(0.25)  # it waited this long behind other events
    loop.post(WorkerFrame(connection, Heartbeat(), read_at))
    loop.post(WorkerFrame(connection, Heartbeat()))  # not timed: not observed
    await settle()
    assert observer.lags == [pytest.approx(0.25)]
