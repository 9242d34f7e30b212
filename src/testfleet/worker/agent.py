"""The worker agent: connects out to the coordinator, runs what it is assigned.

Callers: ``testfleet worker`` (one agent per process), ``testfleet demo``, the
dispatch benchmark (many agents sharing one process and event loop), and tests,
which hand it an in-memory :class:`~testfleet.protocol.channel.Connector` and a
fake clock (``testfleet.testing``) so that no socket is opened and no wall time
passes.

The agent reaches the coordinator only through its connector (a WebSocket one
by default) and waits only through its clock (heartbeats, backoff, timeouts).

The agent keeps two things across reconnects: the attempts it is running
(executors run as their own asyncio tasks, independent of the socket) and the
results the coordinator has not acknowledged yet. After a reconnect it names
both in its ``hello`` and sends the held results again until they are acked
(durable before acknowledged, on the worker's side too). A result is forgotten
only on ``ack``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from pydantic import BaseModel

from testfleet.clock import Clock, SystemClock, wait_within
from testfleet.coordinator_addresses import CoordinatorAddresses
from testfleet.domain.enums import ErrorClass, ResultStatus, TaskType
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.pytest_tasks import TestRecord
from testfleet.domain.result import SimulationStatus, TaskError, TaskResult
from testfleet.protocol.channel import (
    AddressError,
    Channel,
    ChannelClosed,
    CloseCode,
    ConnectFailed,
    Connector,
)
from testfleet.protocol.codec import ProtocolError, decode, encode
from testfleet.protocol.framing import split_by_size
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Ack,
    Assign,
    Assignment,
    AttemptResult,
    Bye,
    Cancel,
    Codec,
    Drain,
    Error,
    Heartbeat,
    Hello,
    Message,
    Reject,
    Result,
    TestReports,
    Welcome,
    WorkerLoad,
)
from testfleet.worker.agent_settings import (
    FATAL_CODES,
    RESULT_BATCH,
    STOP_ACKS_SECONDS,
    STOP_ATTEMPTS_SECONDS,
    TEST_REPORT_BATCH,
    TEST_REPORT_LINGER_SECONDS,
    AgentSettings,
    WorkerRefusedError,
    channel_url,
)
from testfleet.worker.backoff import backoff_delay
from testfleet.worker.connection_report import (
    ChannelError,
    ConnectionReporter,
    describe_channel_failure,
    is_restart_close,
)
from testfleet.worker.executors.base import ExecutionContext, Executor
from testfleet.worker.executors.resource_limits import ResourceLimiter
from testfleet.worker.hardware import GpuLoad, LoadSample, sample_gpu_load, sample_load
from testfleet.worker.log_stream import LogStream
from testfleet.worker.websocket_channel import WebSocketConnector

log = logging.getLogger(__name__)

# Callers import these from here as well (the CLI, the fleets, tests).
__all__ = ["AgentSettings", "WorkerAgent", "WorkerRefusedError", "channel_url"]


@dataclass
class _Running:
    task: asyncio.Task[TaskResult]
    cancel_event: asyncio.Event
    started_at: float


class WorkerAgent:
    """One worker identity: its running attempts, held results and connection loop."""

    def __init__(
        self,
        settings: AgentSettings,
        capabilities: WorkerCapabilities,
        executors: dict[TaskType, Executor],
        *,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        connector: Connector | None = None,
        load_sampler: Callable[[], LoadSample] | None = None,
        limiter: ResourceLimiter | None = None,
    ) -> None:
        """``clock`` times results, paces every wait and is handed to the executors
        (simulated work waits on it; default: the system clock);
        ``connector`` opens the channel to the coordinator (default: WebSocket);
        ``limiter`` holds tasks to their declared resources (default: nothing is)."""
        self.settings = settings
        self.capabilities = capabilities
        self.executors = executors
        self.session_key = secrets.token_hex(16)
        self._rng = rng or random.Random()
        self._clock: Clock = clock or SystemClock()
        self._now = self._clock.now
        self._connector: Connector = connector or WebSocketConnector()
        # NVML only where the probe found NVIDIA GPUs (a CPU or Apple machine
        # never loads it per heartbeat), and then in a thread: nvmlInit can take
        # a while on a machine without persistence mode, and the heartbeat must
        # not hold up the worker's event loop.
        nvidia = any(gpu.vendor == "nvidia" for gpu in capabilities.gpus)
        self._sample_load: Callable[[], LoadSample] = load_sampler or partial(
            sample_load, sample_gpu_load if nvidia else _no_gpu_load
        )
        self._sample_in_thread = load_sampler is None and nvidia
        self._limiter = limiter
        self._running: dict[int, _Running] = {}
        self._held: dict[int, AttemptResult] = {}
        self._all_acked = asyncio.Event()
        self._unsent: list[int] = []
        #: Finished tests of running test attempts, not yet sent.
        self._unsent_tests: dict[int, list[TestRecord]] = {}
        self._outbox: asyncio.Queue[Message] | None = None
        self._codec = Codec.JSON
        self._heartbeat_interval = 2.0
        #: Sends the finished tests of running attempts after the linger (see there).
        self._tests_flusher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        #: A second stop: the grace is over, hand back what still runs now.
        self._hurry = asyncio.Event()
        self.draining = False
        self.connected = asyncio.Event()
        self.completed = 0
        #: Set by :meth:`run` for each connection attempt (see there).
        self._reporter = ConnectionReporter(settings.worker_id, settings.coordinator_url, self._now)
        #: Connection attempts that failed since the last welcome (what the log counts).
        self._failed_attempts = 0

    # ---------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until :meth:`stop`.

        Each failed attempt and each lost session is logged at WARNING (by a
        :class:`ConnectionReporter`; a 1012 close, a coordinator restart, at INFO):
        what the address answered and the pause before the next try. Raises
        :class:`WorkerRefusedError` if the coordinator refuses this worker for good
        (revoked, unauthorized, an incompatible version); a refusal because its id
        is connected from another process is retried with backoff like a lost
        connection.

        ``coordinator_url`` may list several coordinators (README, "Several
        coordinators"). A standby closes with 4010 naming the leader: the agent
        goes there at once (INFO), else to the next address, as when one cannot
        be reached or stops answering pings (hung); it backs off only after a full
        round (:class:`CoordinatorAddresses`). Attempts and held results are kept."""
        failures = 0
        addresses = CoordinatorAddresses.listed(self.settings.coordinator_url)
        #: One reporter per address, so that each summarises its own repeats.
        reporters: dict[str, ConnectionReporter] = {}
        while not self._stopping.is_set():
            url = channel_url(addresses.current)
            self._reporter = reporters.setdefault(
                url, ConnectionReporter(self.settings.worker_id, url, self._now)
            )
            problem = "the coordinator closed the connection"
            standby: ChannelClosed | None = None
            restarting = silent = False
            try:
                async with self._connector.connect(url) as channel:
                    await self._serve(channel)
            except WorkerRefusedError:
                raise
            except AddressError as exc:
                raise WorkerRefusedError(f"invalid coordinator URL {url!r}: {exc}") from None
            except (
                ConnectFailed,
                ChannelClosed,
                ProtocolError,
                ChannelError,
                # Not raised by the connectors testfleet ships; a transport
                # that lets them through still gets a retry, not a dead worker.
                OSError,
                TimeoutError,
            ) as exc:
                problem = describe_channel_failure(exc)
                if isinstance(exc, ChannelClosed) and exc.code == CloseCode.NOT_LEADER:
                    standby = exc
                restarting = is_restart_close(exc)
                # No pong: maybe hung for good while a standby takes its lease; move on.
                silent = isinstance(exc, ChannelClosed) and exc.silent
            finally:
                welcomed = self.connected.is_set()
                if welcomed:
                    # The coordinator welcomed us: the next outage starts the
                    # backoff afresh, however this session ended.
                    failures = 0
                    self._failed_attempts = 0
                    addresses.reached()
                self.connected.clear()
            if self._stopping.is_set():
                break
            if standby is not None:
                round_over = addresses.not_leader(standby.reason or None)
                self._reporter.standby(addresses.current, named=bool(standby.reason))
                if not round_over:
                    continue  # straight to the leader: no pause
            elif welcomed and not (silent and addresses.several):
                round_over = True  # the same address again, after the first pause
            else:
                round_over = addresses.failed()
            delay = 0.0
            if round_over:
                delay = backoff_delay(
                    failures,
                    self._rng,
                    self.settings.backoff_base_seconds,
                    self.settings.backoff_cap_seconds,
                )
                failures += 1
            if welcomed:
                self._reporter.session_ended(problem, retry_in=delay, restarting=restarting)
            else:
                self._failed_attempts += 1
                if restarting:
                    self._reporter.restart_announced()
                self._reporter.attempt_failed(
                    problem,
                    attempt=self._failed_attempts,
                    retry_in=delay,
                    then=None if round_over else addresses.current,
                )
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await wait_within(self._clock, self._stopping.wait(), delay)
        await self._shutdown()

    def stop(self) -> None:
        """Ask :meth:`run` to finish (``testfleet worker`` calls it on SIGTERM and SIGINT).

        The first call stops taking work (a ``bye`` tells the coordinator to
        assign nothing more here; assignments already on the way are rejected),
        lets running attempts finish within ``shutdown_grace_seconds``, then
        cancels the rest and reports them cancelled, which the coordinator
        requeues at once (no wait for the heartbeat timeout). A second call
        ends the grace now.
        """
        if self._stopping.is_set():
            self._hurry.set()
        self._stopping.set()

    async def _shutdown(self) -> None:
        for running in self._running.values():
            running.cancel_event.set()
        if self._running:
            with contextlib.suppress(TimeoutError):
                await wait_within(
                    self._clock,
                    asyncio.wait([r.task for r in self._running.values()]),
                    STOP_ATTEMPTS_SECONDS,
                )

    # ---------------------------------------------------------------- one session

    async def _serve(self, channel: Channel) -> None:
        self._codec = Codec.JSON
        await channel.send(
            encode(
                Hello(
                    protocol_version=PROTOCOL_VERSION,
                    worker_id=self.settings.worker_id,
                    session_key=self.session_key,
                    capabilities=self.capabilities,
                    slots=self.settings.slots,
                    running_attempts=sorted(self._running),
                    held_results=sorted(self._held),
                    codecs=[self.settings.codec, Codec.JSON],
                )
            )
        )
        try:
            frame = await wait_within(
                self._clock, channel.receive(), self.settings.welcome_timeout_seconds
            )
        except TimeoutError:
            raise ChannelError(
                "connected, but the coordinator did not answer hello within "
                f"{self.settings.welcome_timeout_seconds:g}s"
            ) from None
        welcome = decode(frame)
        if isinstance(welcome, Error):
            if welcome.code in FATAL_CODES:
                raise WorkerRefusedError(welcome.message)
            raise ChannelError(
                f"the coordinator refused the hello ({welcome.code.value}): {welcome.message}"
            )
        if not isinstance(welcome, Welcome):
            raise ChannelError(
                f"the coordinator answered hello with '{welcome.type.value}', not welcome"
            )
        self._codec = welcome.codec
        self._heartbeat_interval = welcome.heartbeat_interval_seconds
        for attempt_id in welcome.cancel_attempts:
            self._cancel(attempt_id)
        self._outbox = asyncio.Queue()
        self.connected.set()
        self._reporter.connected(self._failed_attempts)
        # Everything not yet acknowledged goes again, in order.
        self._unsent = sorted(self._held)
        self._flush_results()
        sender = asyncio.create_task(self._send_loop(channel, self._outbox))
        heartbeats = asyncio.create_task(self._heartbeat_loop())
        stopper = asyncio.create_task(self._stopping.wait())
        try:
            receiver = asyncio.create_task(self._receive_loop(channel))
            done, _ = await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                await self._finish_for_stop(receiver)
                receiver.cancel()
                sender.cancel()
                # Said directly, not queued: the sender is being torn down.
                with contextlib.suppress(ChannelClosed):
                    await channel.send(encode(Bye(reason="worker stopping"), self._codec))
            else:
                receiver.result()
        finally:
            self._outbox = None
            for helper in (sender, heartbeats, stopper):
                helper.cancel()

    async def _finish_for_stop(self, receiver: asyncio.Task[None]) -> None:
        """On stop: take no more work, let running attempts finish within the grace,
        cancel and report the rest, wait briefly for the acks."""
        self.draining = True
        self._send_soon(Bye(reason="worker stopping: assign nothing more"))
        await self._finish_within_grace(receiver)
        await self._shutdown()
        if self._held:
            acked = asyncio.create_task(self._all_acked.wait())
            timer = asyncio.create_task(self._clock.sleep(STOP_ACKS_SECONDS))
            await asyncio.wait({acked, receiver, timer}, return_when=asyncio.FIRST_COMPLETED)
            acked.cancel()
            timer.cancel()

    async def _finish_within_grace(self, receiver: asyncio.Task[None]) -> None:
        """Wait for the running attempts to end on their own, up to the grace; a
        second :meth:`stop` or a lost connection ends the wait early."""
        grace = self.settings.shutdown_grace_seconds
        if not self._running or grace <= 0 or self._hurry.is_set():
            return
        log.warning(
            "worker %s stopping: %d running attempt(s) get up to %g s to finish; "
            "stop again (SIGTERM, Ctrl-C) to hand them back now",
            self.settings.worker_id,
            len(self._running),
            grace,
        )
        finished = asyncio.ensure_future(asyncio.wait([r.task for r in self._running.values()]))
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            with contextlib.suppress(TimeoutError):
                await wait_within(
                    self._clock,
                    asyncio.wait({finished, hurry, receiver}, return_when=asyncio.FIRST_COMPLETED),
                    grace,
                )
        finally:
            finished.cancel()
            hurry.cancel()

    async def _receive_loop(self, channel: Channel) -> None:
        """Handle frames until the channel closes; a clean close by the coordinator
        ends the session quietly, any other close is raised (and logged by run)."""
        while True:
            try:
                frame = await channel.receive()
            except ChannelClosed as exc:
                if exc.clean:
                    return
                raise
            self._handle(decode(frame))

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._clock.sleep(self._heartbeat_interval)
            if self._sample_in_thread:
                sample = await asyncio.to_thread(self._sample_load)
            else:
                sample = self._sample_load()
            load = WorkerLoad(
                cpu_percent=sample["cpu_percent"],
                memory_percent=sample["memory_percent"],
                load_average_1m=sample["load_average_1m"],
                running=len(self._running),
                gpu_utilization_percent=sample.get("gpu_utilization_percent"),
                gpu_memory_percent=sample.get("gpu_memory_percent"),
            )
            self._send_soon(Heartbeat(load=load, running_attempts=sorted(self._running)))

    async def _send_loop(self, channel: Channel, outbox: asyncio.Queue[Message]) -> None:
        """The session's only writer: frames leave in the order they were queued."""
        with contextlib.suppress(ChannelClosed):
            while True:
                await channel.send(encode(await outbox.get(), self._codec))

    def _send_soon(self, message: Message) -> None:
        """Queue a frame for this session (dropped when not connected: held
        results are re-sent on the next connection, everything else is stale)."""
        if self._outbox is not None:
            self._outbox.put_nowait(message)

    # ---------------------------------------------------------------- messages

    def _handle(self, message: Message) -> None:
        match message:
            case Assign(assignments=assignments):
                self._start(assignments)
            case Ack(attempt_ids=attempt_ids):
                for attempt_id in attempt_ids:
                    self._held.pop(attempt_id, None)
                if not self._held:
                    self._all_acked.set()
            case Cancel(attempt_ids=attempt_ids):
                for attempt_id in attempt_ids:
                    self._cancel(attempt_id)
            case Drain():
                self.draining = True
            case Error(code=code, message=text):
                if code in FATAL_CODES:
                    raise WorkerRefusedError(text)
                raise ProtocolError(code, text)
            case _:
                log.warning("worker %s: ignoring '%s'", self.settings.worker_id, message.type)

    def _start(self, assignments: list[Assignment]) -> None:
        accepted: list[int] = []
        for assignment in assignments:
            attempt_id = assignment.attempt_id
            if attempt_id in self._running or attempt_id in self._held:
                continue  # a duplicate delivery: it is already under way
            if self._stopping.is_set():
                # Sent before our bye arrived: the coordinator requeues it at once.
                self._send_soon(Reject(attempt_id=attempt_id, reason="the worker is stopping"))
                continue
            executor = self.executors.get(assignment.task.type)
            if executor is None:
                self._send_soon(
                    Reject(
                        attempt_id=attempt_id,
                        reason=f"this worker has no executor for '{assignment.task.type.value}'",
                    )
                )
                continue
            cancel_event = asyncio.Event()
            # Live output, bounded and rate-limited (log_stream.py); sent only
            # while connected, since the result carries the full log anyway.
            output = LogStream(attempt_id, self._send_soon, self._clock)
            context = ExecutionContext(
                worker_id=self.settings.worker_id,
                attempt_id=attempt_id,
                attempt=assignment.attempt,
                cancel_event=cancel_event,
                work_dir=self.settings.work_dir,
                completed_tests=frozenset(assignment.completed_tests),
                report_tests=self._test_reporter(attempt_id),
                report_output=output.write,
                clock=self._clock,
                limiter=self._limiter,
            )
            task = asyncio.create_task(
                self._execute(executor, assignment, context, output), name=f"attempt-{attempt_id}"
            )
            self._running[attempt_id] = _Running(task, cancel_event, self._now())
            accepted.append(attempt_id)
        if accepted:
            self._send_soon(Accept(attempt_ids=accepted))

    async def _execute(
        self,
        executor: Executor,
        assignment: Assignment,
        context: ExecutionContext,
        output: LogStream,
    ) -> TaskResult:
        started = self._now()
        try:
            result = await executor.run(assignment.task, context)
        except Exception as exc:  # an executor bug must not take the worker down
            log.exception("executor for %s failed", assignment.task.type.value)
            result = TaskResult(
                task_id=assignment.task.task_id,
                worker_id=self.settings.worker_id,
                status=ResultStatus.FAILED,
                execution_time_seconds=max(0.0, self._now() - started),
                simulation_status=SimulationStatus(is_simulated=False),
                error=TaskError(
                    error_class=ErrorClass.INFRASTRUCTURE,
                    message=f"executor error: {type(exc).__name__}: {exc}"[:4000],
                ),
            )
        finally:
            # The output's last chunk leaves before the result, so a follower of
            # the live tail sees the end before the task shows as finished.
            output.close()
        self._running.pop(context.attempt_id, None)
        # The result lists every test the attempt ran: streaming them too is moot.
        self._unsent_tests.pop(context.attempt_id, None)
        self._all_acked.clear()
        self._held[context.attempt_id] = AttemptResult(
            attempt_id=context.attempt_id,
            started_at=started,
            finished_at=self._now(),
            result=result,
        )
        self.completed += 1
        self._unsent.append(context.attempt_id)
        if len(self._unsent) == 1:
            # Results finishing in the same loop iteration leave in one frame.
            asyncio.get_running_loop().call_soon(self._flush_results)
        return result

    def _test_reporter(self, attempt_id: int) -> Callable[[list[TestRecord]], None]:
        """The callback a test executor hands finished tests to; they leave in
        one ``tests`` frame per attempt every TEST_REPORT_LINGER_SECONDS at most
        (the first waits that long). Sent only while connected: the
        attempt's result lists them all again, so a dropped frame loses nothing
        but liveness."""

        def report(records: list[TestRecord]) -> None:
            if not records:
                return
            if not self._unsent_tests:
                self._tests_flusher = asyncio.create_task(self._flush_tests_later())
            self._unsent_tests.setdefault(attempt_id, []).extend(records)

        return report

    async def _flush_tests_later(self) -> None:
        await self._clock.sleep(TEST_REPORT_LINGER_SECONDS)
        self._flush_tests()

    def _flush_tests(self) -> None:
        pending, self._unsent_tests = self._unsent_tests, {}
        for attempt_id, records in pending.items():
            for batch in split_by_size(records, _encoded_size, max_items=TEST_REPORT_BATCH):
                self._send_soon(TestReports(attempt_id=attempt_id, records=batch))

    def _flush_results(self) -> None:
        pending = [a for a in self._unsent if a in self._held]
        self._unsent = []
        held = [self._held[a] for a in pending]
        for batch in split_by_size(held, _encoded_size, max_items=RESULT_BATCH):
            self._send_soon(Result(results=batch))

    def _cancel(self, attempt_id: int) -> None:
        running = self._running.get(attempt_id)
        if running is not None:
            running.cancel_event.set()

    @property
    def held_count(self) -> int:
        return len(self._held)


def _encoded_size(item: BaseModel) -> int:
    """About how many bytes ``item`` takes in a frame: its JSON's length (MessagePack
    is smaller; the frame budget is half the limit, leaving room for the rest)."""
    return len(item.model_dump_json())


def _no_gpu_load() -> GpuLoad | None:
    """The GPU load of a worker without NVIDIA GPUs: none (its heartbeats omit it)."""
    return None
