"""One session child process, seen from the worker: its pipes, its events, one chunk.

Created by :class:`~testfleet.worker.pytest_sessions.sessions.SessionPool` only (see
that module for the pool: zygotes, reuse, eviction); the executor calls
:meth:`PytestSession.run_chunk` on a session the pool hands it. The child's
side of the protocol is ``session_child.py``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from testfleet.domain import pytest_limits as limits
from testfleet.domain.pytest_tasks import (
    PhaseReport,
    ReportOutcome,
    TestLocation,
    TestPhase,
    TestRecord,
)
from testfleet.worker.executors.process_group import OutputTail, end_group, signal_group
from testfleet.worker.pytest_sessions import pipe_protocol as wire

if TYPE_CHECKING:
    from testfleet.worker.pytest_sessions.sessions import SessionKey

#: How long to wait for a dying child's group before killing it (the pool's default).
DEFAULT_KILL_GRACE_SECONDS = 2.0
#: What a session keeps of its own output (for start-up errors and crashes).
SESSION_TAIL_BYTES = 64 * 1024
#: How much of the output a start-up or crash message quotes.
QUOTED_LINES = 40
QUOTED_CHARS = 4000

# Leftover records are keyed by an int; attempt ids are positive, ours negative.
_record_ids = itertools.count(1)


@dataclass(frozen=True)
class CollectError:
    nodeid: str
    longrepr: str


@dataclass(frozen=True)
class Collection:
    """What the session's collection found (its ``collected`` event)."""

    count: int
    errors: tuple[CollectError, ...]
    seconds: float
    python: str
    pytest_version: str


@dataclass
class RunningTest:
    """The test a session was running, as far as its events told (for a crash record)."""

    nodeid: str
    location: TestLocation
    keywords: list[str]
    phases: list[PhaseReport] = field(default_factory=list)


@dataclass(frozen=True)
class ChunkEnd:
    """How :meth:`PytestSession.run_chunk` ended."""

    #: The child reported the end of the chunk: it is healthy and reusable.
    finished: bool
    #: When the child died (or pytest ended) mid-chunk: the test it was running.
    running: RunningTest | None = None
    #: A test stopped the session (``pytest.exit()``): the chunk's other tests
    #: did not run, and the session is ending (never reuse it).
    interrupted: bool = False
    #: "exit code 3", "signal SIGKILL": how the child ended ("" when finished).
    death: str = ""
    #: The last lines of its output, for the crash record.
    output: str = ""


def quote_output(raw: bytes) -> str:
    """The last lines of ``raw`` as text, for a message (may be "")."""
    text = raw.decode("utf-8", errors="replace")
    lines = text.rstrip().splitlines()[-QUOTED_LINES:]
    quoted = "\n".join(lines)
    return quoted[-QUOTED_CHARS:]


def describe_returncode(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def parse_record(raw: Any) -> TestRecord:
    """A ``test`` event's record; a record we cannot read becomes a failed one saying why."""
    try:
        return TestRecord.model_validate(raw)
    except ValidationError as exc:
        nodeid = str(raw.get("nodeid", "?")) if isinstance(raw, dict) else "?"
        message = f"the worker could not read this test's report: {exc}"
        return TestRecord(
            nodeid=nodeid[: limits.MAX_NODE_ID_CHARS] or "?",
            location=_fallback_location(nodeid),
            phases=[
                PhaseReport(
                    when=TestPhase.SETUP,
                    outcome=ReportOutcome.FAILED,
                    longrepr=message[: limits.MAX_LONGREPR_CHARS],
                )
            ],
        )


class _EventReader(asyncio.Protocol):
    """Splits the report pipe into events (:mod:`.pipe_protocol`) and queues them;
    a line that is no event we know is counted in ``ignored``."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.events: collections.deque[wire.Event] = collections.deque()
        self.changed = asyncio.Event()
        self.closed = False
        self.ignored = 0

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            try:
                event = wire.decode_event(json.loads(line))
            except ValueError:
                event = None
            if event is None:
                self.ignored += 1
            else:
                self.events.append(event)
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.changed.set()


class _OutputReader(asyncio.Protocol):
    """Keeps the session's own tail and feeds the current chunk's sink, if any."""

    def __init__(self) -> None:
        self.tail = OutputTail(SESSION_TAIL_BYTES)
        self.sink: OutputTail | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.tail.data_received(data)
        if self.sink is not None:
            self.sink.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class PytestSession:
    """One session child process: a zygote until activated, then a collected session.

    Created by :class:`SessionPool` only. ``run_chunk`` is its one public
    operation; the rest is state the executor reads for the result.
    """

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        control: asyncio.WriteTransport,
        events: _EventReader,
        events_transport: asyncio.ReadTransport,
        output: _OutputReader,
        output_transport: asyncio.ReadTransport,
        *,
        python: str,
        drain_seconds: float,
    ) -> None:
        self.process = process
        self.pid = process.pid  # start_new_session: also the process group id
        self.python = python
        self.record_id = -next(_record_ids)
        self.key: SessionKey | None = None
        self.collection: Collection | None = None
        self.pytest_version = ""
        self.chunks_run = 0
        #: Seconds the last chunk spent collecting its files (lazy sessions).
        self.chunk_collect_seconds = 0.0
        self.idle_since = 0.0
        self.temp_dir: Path | None = None
        self.leftovers_dir: Path | None = None
        self.ended = False
        self._control = control
        self._events = events
        self._events_transport = events_transport
        self._output = output
        self._output_transport = output_transport
        self._drain = drain_seconds
        self._chunks = itertools.count(1)
        self._exited: asyncio.Future[int] = asyncio.ensure_future(process.wait())

    @property
    def alive(self) -> bool:
        return not self.ended and not self._exited.done()

    @property
    def output_sink(self) -> OutputTail | None:
        """Where this session's output also goes while a chunk runs (the attempt's logs)."""
        return self._output.sink

    @output_sink.setter
    def output_sink(self, sink: OutputTail | None) -> None:
        self._output.sink = sink

    def output_text(self) -> str:
        return quote_output(self._output.tail.tail())

    def send(self, command: wire.Command) -> None:
        """Queue a command; one the child can no longer read is dropped (its death shows)."""
        if self._control.is_closing():
            return
        self._control.write(wire.encode(command))

    async def next_event(self) -> wire.Event | None:
        """The next event; None once the child has gone (its last events read first)."""
        while True:
            if self._events.events:
                return self._events.events.popleft()
            if self._events.closed:
                return None
            if self._exited.done():
                # Events written just before the exit may still be in the pipe. A
                # process forked by a test could hold it open: do not wait forever.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_changed(), self._drain)
                if not self._events.events:
                    self._events.closed = True
                continue
            self._events.changed.clear()
            waiter: asyncio.Future[Any] = asyncio.ensure_future(self._events.changed.wait())
            watched: set[asyncio.Future[Any]] = {waiter, self._exited}
            try:
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    async def _wait_changed(self) -> None:
        while not self._events.closed:
            self._events.changed.clear()
            await self._events.changed.wait()
            if self._events.events:
                return

    def _take_events(self) -> list[wire.Event]:
        taken = list(self._events.events)
        self._events.events.clear()
        return taken

    async def death(self, grace_seconds: float) -> str:
        """Wait (briefly) for the child to be gone and its output read; how it ended."""
        if not await self.wait_exit(grace_seconds):
            # Said it ended but hangs (an atexit handler, a thread): end it.
            await end_group(self.pid, grace_seconds)
            await self.wait_exit(grace_seconds + 5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._output.closed), self._drain)
        return describe_returncode(self.process.returncode)

    async def run_chunk(
        self,
        node_ids: list[str],
        env: Mapping[str, str],
        on_records: Callable[[list[TestRecord]], None],
        *,
        grace_seconds: float = DEFAULT_KILL_GRACE_SECONDS,
    ) -> ChunkEnd:
        """Run ``node_ids`` in this session; hand each batch of finished records to
        ``on_records`` as it arrives. Returns when the child reports the chunk's end
        or dies. Timeouts and cancels are the caller's: it cancels this coroutine
        and discards the session."""
        chunk = next(self._chunks)
        self.chunks_run += 1
        self.chunk_collect_seconds = 0.0
        self.send(wire.RunChunk(chunk=chunk, node_ids=node_ids, env=dict(env)))
        running: RunningTest | None = None
        interrupted = False
        while True:
            first = await self.next_event()
            events = [] if first is None else [first, *self._take_events()]
            batch: list[TestRecord] = []
            ended: bool | None = None if first is not None else False
            for event in events:
                if isinstance(event, wire.Start):
                    running = RunningTest(
                        nodeid=event.nodeid,
                        location=_location(event.location, event.nodeid),
                        keywords=[str(k)[: limits.MAX_KEYWORD_CHARS] for k in event.keywords][
                            : limits.MAX_KEYWORDS
                        ],
                    )
                elif isinstance(event, wire.Phase) and running is not None:
                    phase = _phase(event)
                    if phase is not None:
                        if phase.when is TestPhase.SETUP:
                            running.phases = []
                        running.phases.append(phase)
                elif isinstance(event, wire.TestDone):
                    batch.append(parse_record(event.record))
                    running = None
                elif isinstance(event, wire.CollectedMore):
                    self._collected_more(event)
                elif isinstance(event, wire.ChunkDone):
                    ended = True
                    interrupted = event.interrupted
                    break
                elif isinstance(event, wire.SessionEnd | wire.Fatal):
                    ended = False  # pytest stopped mid-chunk (pytest.exit(), an internal error)
                    break
            if batch:
                on_records(batch)
            if ended is True:
                return ChunkEnd(finished=True, interrupted=interrupted)
            if ended is False:
                death = await self.death(grace_seconds)
                return ChunkEnd(
                    finished=False, running=running, death=death, output=self.output_text()
                )

    def _collected_more(self, event: wire.CollectedMore) -> None:
        """A lazy session collected the files a chunk needed (see session_child)."""
        seconds = max(0.0, event.seconds)
        self.chunk_collect_seconds += seconds
        before = self.collection
        if before is None:
            return
        self.collection = Collection(
            count=event.count,
            errors=before.errors + collect_errors(event.errors),
            seconds=before.seconds + seconds,
            python=before.python,
            pytest_version=before.pytest_version,
        )

    async def wait_exit(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the child to exit; whether it has."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), seconds)
        return self._exited.done()

    def close_control(self) -> None:
        """Close the command pipe: the child reads its end and exits."""
        self._control.close()

    def kill_now(self) -> None:
        """SIGKILL the group without waiting (an attempt or the worker is being cancelled)."""
        if not self.ended:  # once ended, the group id may in time name someone else's group
            signal_group(self.pid, signal.SIGKILL)

    def close_pipes(self) -> None:
        for transport in (self._control, self._events_transport, self._output_transport):
            transport.close()


def collect_errors(raw: list[dict[str, Any]]) -> tuple[CollectError, ...]:
    """A ``collected`` or ``collected_more`` event's errors (entries that are no
    object are left out)."""
    return tuple(
        CollectError(str(e.get("nodeid", "")), str(e.get("longrepr", "")))
        for e in raw
        if isinstance(e, dict)
    )


def _location(raw: Any, nodeid: str) -> TestLocation:
    try:
        return TestLocation.model_validate(raw)
    except ValidationError:
        return _fallback_location(nodeid)


def _fallback_location(nodeid: str) -> TestLocation:
    """Where a test is, as far as its node id says (when its own location is unreadable)."""
    path, _, domain = nodeid.partition("::")
    return TestLocation(
        path=path[: limits.MAX_PATH_CHARS], domain=domain[: limits.MAX_NODE_ID_CHARS]
    )


def _phase(event: wire.Phase) -> PhaseReport | None:
    try:
        return PhaseReport.model_validate(
            {
                "when": event.when,
                "outcome": event.outcome,
                "duration": event.duration,
                "start": event.start,
                "stop": event.stop,
            }
        )
    except ValidationError:
        return None


class _WritePipe(asyncio.BaseProtocol):
    """The control pipe's protocol: nothing to do but exist (writes are buffered)."""
