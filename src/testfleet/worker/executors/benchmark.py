"""The ``benchmark`` executor: time a model per batch size in a runner child process.

Callers: the worker agent, for tasks of type ``benchmark`` (config:
``domain.benchmark.BenchmarkConfig``).
:func:`~testfleet.worker.executors.registry.default_executors` includes it only
where torch and transformers are installed.

How an attempt runs:

* The config is validated, and an unknown model name is refused, here, without
  starting anything.
* The hardware kind is chosen by :mod:`testfleet.worker.benchmarking.devices`
  (``config.device``, else the first required kind this worker's torch can
  use, else the CPU when nothing is required).
* ``python -P -m testfleet.worker.benchmarking.runner`` starts in its own
  session, so its process group id is its pid (as for ``command`` tasks, and
  with the same helpers): on timeout or cancel the whole group gets SIGTERM,
  then SIGKILL after ``kill_grace_seconds``. torch is only ever imported in
  that child, never in the worker.
* The request goes to the child's stdin; its stdout is parsed line by line as
  it arrives (:mod:`...benchmarking.protocol`), so a child that dies at a large
  batch size leaves the smaller sizes' results; the tail of its stderr becomes
  the result's logs. The child runs with ``HF_HUB_OFFLINE=1``: nothing is
  downloaded.
* ``requirements.resources`` hold the runner as they hold a ``command``
  task (:mod:`.resource_limits`): memory rlimit and cgroup, allotted cores,
  and, with a disk limit, its own watched directory as its cwd. A runner the
  limit ended is judged with the limit as the cause (``out_of_memory`` or
  ``resource_limit``, the limit in the message), and an out-of-memory the
  runner caught at a batch size says which limit it ran under.
* :func:`~testfleet.worker.benchmarking.outcome.judge` turns the lines and the
  ending into the status (its docstring states the rules), ``results`` (a
  ``BenchmarkOutcome``) and ``hardware_metrics``. ``is_simulated`` is always
  false: every figure was measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import BinaryIO

from testfleet.domain.benchmark import BenchmarkBackend, BenchmarkConfig
from testfleet.domain.enums import ErrorClass, HardwareKind, ResultStatus, TaskType
from testfleet.domain.hardware import TorchInfo
from testfleet.domain.result import TaskResult, encode_logs
from testfleet.domain.task import TaskSpec
from testfleet.worker.benchmarking.devices import (
    backend_hardware,
    choose_hardware,
    needs_probe,
    unsupported_reason,
    usable_hardware,
)
from testfleet.worker.benchmarking.errors import BenchmarkError
from testfleet.worker.benchmarking.metrics import DEFAULT_INTERVAL_SECONDS
from testfleet.worker.benchmarking.models import zoo_entry
from testfleet.worker.benchmarking.outcome import RunnerReport, judge
from testfleet.worker.benchmarking.protocol import (
    MAX_LINE_BYTES,
    BatchLine,
    FatalLine,
    FinalLine,
    RunnerRequest,
    SetupLine,
    encode_request,
    parse_line,
)
from testfleet.worker.executors.base import (
    ExecutionContext,
    ExecutorBase,
    ResultBuilder,
    attempt_environment,
)
from testfleet.worker.executors.leftovers import forget, remember
from testfleet.worker.executors.process_group import (
    Ending,
    OutputTail,
    end_group,
    signal_group,
    wait_for_exit,
)
from testfleet.worker.executors.resource_limits import AttemptLimits, begin_limits
from testfleet.worker.executors.task_processes import attempt_mark, end_marked, kill_marked
from testfleet.worker.hardware import probe_torch

log = logging.getLogger(__name__)

RunnerLine = SetupLine | BatchLine | FinalLine | FatalLine

DEFAULT_KILL_GRACE_SECONDS = 2.0
DEFAULT_LOG_TAIL_BYTES = 256 * 1024
#: After the process group is gone, how long to wait for the pipes' last bytes.
DEFAULT_OUTPUT_DRAIN_SECONDS = 2.0
RUNNER_MODULE = "testfleet.worker.benchmarking.runner"
#: Environment the runner always gets: never reach a model hub.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def default_runner_command() -> list[str]:
    # -P: the child's cwd (the work directory) is not put on sys.path, so a
    # stray "torch" folder there cannot shadow the real one.
    return [sys.executable, "-P", "-m", RUNNER_MODULE]


class _LineReader(asyncio.Protocol):
    """Splits the runner's stdout into lines and hands each valid one on as it arrives."""

    def __init__(self, on_line: Callable[[RunnerLine], None]) -> None:
        self._on_line = on_line
        self._buffer = bytearray()
        self._discarding = False
        self.ignored = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE_BYTES:
                    # Not a line of ours: drop it up to its end, whenever that comes.
                    self._buffer.clear()
                    if not self._discarding:
                        self.ignored += 1
                    self._discarding = True
                return
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._discarding:
                self._discarding = False
                continue
            self._handle(raw)

    def _handle(self, raw: bytes) -> None:
        line = parse_line(raw)
        if line is None:
            self.ignored += 1 if raw.strip() else 0
            return
        self._on_line(line)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._buffer and not self._discarding:
            self._handle(bytes(self._buffer))
        self._buffer.clear()
        if not self.closed.done():
            self.closed.set_result(None)


class BenchmarkExecutor(ExecutorBase):
    """Runs ``BenchmarkConfig`` tasks through the runner child; reports a ``BenchmarkOutcome``."""

    task_type: TaskType = TaskType.BENCHMARK

    def __init__(
        self,
        *,
        kill_grace_seconds: float = DEFAULT_KILL_GRACE_SECONDS,
        metrics_interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        log_tail_bytes: int = DEFAULT_LOG_TAIL_BYTES,
        output_drain_seconds: float = DEFAULT_OUTPUT_DRAIN_SECONDS,
        runner_command: Sequence[str] | None = None,
        torch_info: Callable[[], TorchInfo | None] | None = None,
        on_line: Callable[[RunnerLine], None] | None = None,
    ) -> None:
        """``runner_command`` replaces the runner (tests use stand-ins that need no torch);
        ``torch_info`` replaces the torch probe used to choose between required kinds
        (the agent may pass what its capabilities already know); ``on_line`` sees
        every runner line as it arrives (progress; tests cancel on one)."""
        self._kill_grace = kill_grace_seconds
        self._metrics_interval = metrics_interval_seconds
        self._log_tail = log_tail_bytes
        self._drain = output_drain_seconds
        self._command = list(runner_command) if runner_command else default_runner_command()
        self._torch_info = torch_info or probe_torch
        self._on_line = on_line
        self._usable: frozenset[HardwareKind] | None = None

    async def run(self, task: TaskSpec, context: ExecutionContext) -> TaskResult:
        out = ResultBuilder(task, context, is_simulated=False)
        config = out.parse_config(BenchmarkConfig)
        if isinstance(config, TaskResult):
            return config
        if context.cancel_event.is_set():
            return out.finish(
                ResultStatus.CANCELLED, (ErrorClass.CANCELLED, "cancelled before the run started")
            )
        if config.model_path is None:
            try:
                zoo_entry(config.model)
            except BenchmarkError as exc:
                return out.failed((exc.error_class, exc.message))
        # A non-torch backend (issue 15) runs where its provider or device says;
        # the runner checks that this worker has it.
        hardware = backend_hardware(config) or await self._choose_hardware(config, task)
        reason = unsupported_reason(hardware) if config.backend is BenchmarkBackend.TORCH else None
        if reason is not None:
            return out.failed((ErrorClass.INVALID_CONFIG, reason))
        try:
            context.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return out.failed((ErrorClass.INFRASTRUCTURE, f"cannot create work directory: {exc}"))
        limits, problem = begin_limits(
            context.limiter, context.attempt_id, task.requirements.resources, context.work_dir
        )
        if problem is not None:
            return out.failed(problem)
        try:
            return await self._start(out, config, hardware, limits)
        finally:
            if limits is not None:
                limits.close()

    async def _start(
        self,
        out: ResultBuilder,
        config: BenchmarkConfig,
        hardware: HardwareKind,
        limits: AttemptLimits | None,
    ) -> TaskResult:
        task, context = out.task, out.context
        request = RunnerRequest(
            task_id=task.task_id,
            config=config,
            device=hardware,
            metrics_interval_seconds=self._metrics_interval,
        )
        env = attempt_environment(task, context, OFFLINE_ENV)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=asyncio.subprocess.PIPE,
                stdout=out_write,
                stderr=err_write,
                cwd=limits.cwd(context.work_dir) if limits is not None else context.work_dir,
                env=env,
                start_new_session=True,
                preexec_fn=limits.preexec if limits is not None else None,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            # SubprocessError: preexec_fn failed, i.e. the limits could not be applied.
            os.close(out_read)
            os.close(err_read)
            return out.failed(
                (ErrorClass.INFRASTRUCTURE, f"cannot start the benchmark runner: {exc}")
            )
        finally:
            # The child holds its copies; ours must close or the pipes never reach EOF.
            os.close(out_write)
            os.close(err_write)

        stdout = os.fdopen(out_read, "rb", buffering=0)
        stderr = os.fdopen(err_read, "rb", buffering=0)
        remember(context.work_dir, context.attempt_id, process.pid)
        try:
            return await self._supervise(
                out, config, hardware, request, process, stdout, stderr, limits
            )
        except asyncio.CancelledError:
            # The agent itself is going away: leave nothing running behind it.
            await self._kill_now(process, stdout, stderr, context.attempt_id)
            raise
        except Exception as exc:  # a bug or resource failure here, not the task's fault
            log.exception("supervising the benchmark runner failed")
            await self._kill_now(process, stdout, stderr, context.attempt_id)
            return out.failed(
                (ErrorClass.INFRASTRUCTURE, f"supervising the benchmark runner failed: {exc!r}")
            )
        finally:
            forget(context.work_dir, context.attempt_id)

    async def _choose_hardware(self, config: BenchmarkConfig, task: TaskSpec) -> HardwareKind:
        required = task.requirements.hardware
        usable = frozenset({HardwareKind.CPU})
        if needs_probe(config.device, required):
            usable = await self._usable_hardware()
        return choose_hardware(config.device, required, usable)

    async def _usable_hardware(self) -> frozenset[HardwareKind]:
        if self._usable is None:
            try:
                info = await asyncio.to_thread(self._torch_info)
            except Exception as exc:  # no answer: the runner will find out for itself
                log.warning("torch probe failed: %s", exc)
                info = None
            self._usable = usable_hardware(info)
        return self._usable

    def _observe(self, report: RunnerReport, line: RunnerLine) -> None:
        report.add(line)
        if self._on_line is not None:
            try:
                self._on_line(line)
            except Exception:  # an observer's bug must not lose the result
                log.exception("benchmark line observer failed")

    async def _supervise(
        self,
        out: ResultBuilder,
        config: BenchmarkConfig,
        hardware: HardwareKind,
        request: RunnerRequest,
        process: asyncio.subprocess.Process,
        stdout: BinaryIO,
        stderr: BinaryIO,
        limits: AttemptLimits | None = None,
    ) -> TaskResult:
        task, context = out.task, out.context
        loop = asyncio.get_running_loop()
        report = RunnerReport()
        lines = _LineReader(lambda line: self._observe(report, line))
        logs = OutputTail(self._log_tail, context.report_output)
        out_transport, _ = await loop.connect_read_pipe(lambda: lines, stdout)
        err_transport, _ = await loop.connect_read_pipe(lambda: logs, stderr)
        feeder = asyncio.create_task(self._feed(process, encode_request(request)))
        watcher = limits.start_disk_watch(process.pid) if limits is not None else None
        try:
            ending = await wait_for_exit(process, context.cancel_event, out.remaining())
            # After a normal exit this only finds leftovers (usually none: instant).
            await end_group(process.pid, self._kill_grace)
            # Then what left the group (setsid, a double fork), found by its mark.
            await end_marked(attempt_mark(context.attempt_id), self._kill_grace)
            # And what also cleared its environment: still in the attempt's cgroup.
            if limits is not None:
                await asyncio.to_thread(limits.end_strays)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=self._kill_grace + 5)
            for closed in (lines.closed, logs.closed):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(closed), timeout=self._drain)
        finally:
            feeder.cancel()
            if watcher is not None:
                watcher.cancel()
            out_transport.close()
            err_transport.close()

        tail = logs.tail()
        ended_by_limit = None
        if limits is not None and ending is Ending.EXITED:
            ended_by_limit = limits.verdict(process.returncode, tail)
        verdict = judge(
            config=config,
            hardware=hardware,
            report=report,
            ending=ending,
            returncode=process.returncode,
            timeout_seconds=task.timeout_seconds,
            metrics_interval_seconds=self._metrics_interval,
            ended_by_limit=ended_by_limit,
            memory_note=limits.memory_note() if limits is not None else None,
        )
        return out.finish(
            verdict.status,
            verdict.error,
            results=verdict.results,
            hardware_metrics=verdict.hardware_metrics,
            logs=encode_logs(tail),
        )

    @staticmethod
    async def _feed(process: asyncio.subprocess.Process, payload: bytes) -> None:
        """Write the request and close stdin; a child that died first is not an error here."""
        stdin = process.stdin
        if stdin is None:
            return
        with contextlib.suppress(ConnectionError, OSError):
            stdin.write(payload)
            await stdin.drain()
        stdin.close()
        with contextlib.suppress(ConnectionError, OSError):
            await stdin.wait_closed()

    async def _kill_now(
        self,
        process: asyncio.subprocess.Process,
        stdout: BinaryIO,
        stderr: BinaryIO,
        attempt_id: int,
    ) -> None:
        signal_group(process.pid, signal.SIGKILL)
        stdout.close()
        stderr.close()
        await asyncio.to_thread(kill_marked, attempt_mark(attempt_id))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), timeout=self._kill_grace + 5)
