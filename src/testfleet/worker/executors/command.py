"""The ``command`` executor: run a program, keep the end of its output, report the exit.

Callers: the worker agent, for tasks of type ``command`` (see
``domain.task_configs.CommandConfig``).

Decisions:

* ``argv`` is executed directly, never through a shell, so nothing in a task
  document is interpreted by one.
* The child starts its own session (``start_new_session=True``), so its process
  group id is its pid and everything it spawns stays in that group unless it
  deliberately leaves. On timeout or cancel the *whole group* gets SIGTERM,
  then SIGKILL after ``kill_grace_seconds``. Anything a task leaves running
  after its main process exits is ended the same way (as CI runners do): a
  test's stray server must not outlive it and hold the next task's port.
* stdout and stderr share one pipe, so the tail reads in the order the program
  wrote. The pipe is our own (``os.pipe``) rather than asyncio's subprocess
  pipes: in Python 3.11 ``Process.wait()`` only returns once the pipes close,
  which a background grandchild can postpone forever. Reading keeps at most
  ``output_tail_bytes`` plus one chunk in memory, however much is written, and
  nothing on disk; ``results["output_dropped_bytes"]`` says how much was let go.
* What leaves the group (``setsid``, a double fork) is found by the attempt's
  process mark and ended with it (:mod:`.task_processes`).
* ``requirements.resources`` (memory, cores, disk) are applied in the child
  and watched beside it by :mod:`.resource_limits` when the worker has a
  limiter; an ending they caused is reported ``out_of_memory`` or
  ``resource_limit``, with the limit in the message.
* Peak memory is sampled (leader plus descendants, every
  ``memory_sample_interval_seconds``); a task shorter than one interval
  reports no memory figure rather than a misleading one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import psutil

from testfleet.domain.enums import ErrorClass, ResultStatus, TaskType
from testfleet.domain.result import TaskResult, encode_logs
from testfleet.domain.task import TaskSpec
from testfleet.domain.task_configs import CommandConfig
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

log = logging.getLogger(__name__)

#: The size of ``results["output_tail"]``: enough to show an error, small enough for a table.
RESULT_TAIL_BYTES = 4096
DEFAULT_KILL_GRACE_SECONDS = 2.0
DEFAULT_MEMORY_SAMPLE_INTERVAL_SECONDS = 1.0
#: After the process group is gone, how long to wait for the last output to be read.
#: Only a process that left the group (setsid) can keep the pipe open longer.
DEFAULT_OUTPUT_DRAIN_SECONDS = 2.0


def _decode_tail(raw: bytes) -> str:
    # The cut may fall inside a UTF-8 sequence; drop its orphaned continuation
    # bytes (at most three) instead of showing a replacement character first.
    start = 0
    while start < min(3, len(raw)) and 0x80 <= raw[start] <= 0xBF:
        start += 1
    return raw[start:].decode("utf-8", errors="replace")


def _working_directory(
    configured: str | None, work_dir: Path
) -> tuple[Path, tuple[ErrorClass, str] | None]:
    """Where the command runs, or why it cannot (a quick stat: fine to call from async code)."""
    if configured is not None:
        cwd = Path(configured)
        if cwd.is_dir():
            return cwd, None
        what = "is not a directory" if cwd.exists() else "does not exist"
        return cwd, (ErrorClass.INVALID_CONFIG, f"working directory {what}: {configured}")
    # No cwd given: the worker's scratch directory, not wherever the worker was started.
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return work_dir, (ErrorClass.INFRASTRUCTURE, f"cannot create work directory: {exc}")
    return work_dir, None


def _explain_not_found(program: str, cwd: Path, env: dict[str, str]) -> str:
    """Say which file is missing: the program, or the interpreter its ``#!`` line names."""
    if os.sep in program:
        found = (cwd / program).exists()  # a relative path is resolved in the child's cwd
        where = f"(relative to {cwd})" if not Path(program).is_absolute() else ""
    else:
        found = shutil.which(program, path=env.get("PATH")) is not None
        where = "on PATH"
    if found:
        return f"cannot execute {program}: the interpreter named on its #! line was not found"
    return " ".join(part for part in ("program not found", where) if part) + f": {program}"


def _describe_signal(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass
class _MemoryPeak:
    peak_bytes: int = 0
    samples: int = 0
    _process: psutil.Process | None = field(default=None, repr=False)

    def sample(self, pid: int) -> bool:
        """Add one sample of the tree's resident memory; False once the leader is gone."""
        try:
            if self._process is None:
                self._process = psutil.Process(pid)
            members = [self._process, *self._process.children(recursive=True)]
        except psutil.Error:
            return False
        total = 0
        for member in members:
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
        self.peak_bytes = max(self.peak_bytes, total)
        self.samples += 1
        return True


class CommandExecutor(ExecutorBase):
    """Runs ``CommandConfig.argv`` as a process group and reports how it ended."""

    task_type: TaskType = TaskType.COMMAND

    def __init__(
        self,
        *,
        kill_grace_seconds: float = DEFAULT_KILL_GRACE_SECONDS,
        memory_sample_interval_seconds: float | None = DEFAULT_MEMORY_SAMPLE_INTERVAL_SECONDS,
        output_drain_seconds: float = DEFAULT_OUTPUT_DRAIN_SECONDS,
    ) -> None:
        self._kill_grace = kill_grace_seconds
        self._memory_interval = memory_sample_interval_seconds
        self._drain = output_drain_seconds

    async def run(self, task: TaskSpec, context: ExecutionContext) -> TaskResult:
        out = ResultBuilder(task, context, is_simulated=False)
        config = out.parse_config(CommandConfig)
        if isinstance(config, TaskResult):
            return config
        if context.cancel_event.is_set():
            cancelled = (ErrorClass.CANCELLED, "cancelled before the command started")
            return out.finish(ResultStatus.CANCELLED, cancelled)

        cwd, cwd_problem = _working_directory(config.cwd, context.work_dir)
        if cwd_problem is not None:
            return out.failed(cwd_problem)
        limits, problem = begin_limits(
            context.limiter, context.attempt_id, task.requirements.resources, context.work_dir
        )
        if problem is not None:
            return out.failed(problem)
        if limits is not None and config.cwd is None:
            cwd = limits.cwd(cwd)
        try:
            return await self._start(out, config, cwd, limits)
        finally:
            if limits is not None:
                limits.close()

    async def _start(
        self, out: ResultBuilder, config: CommandConfig, cwd: Path, limits: AttemptLimits | None
    ) -> TaskResult:
        task, context = out.task, out.context

        # config.env comes last: a command may override even the TESTFLEET_* names.
        env = attempt_environment(task, context, config.env)
        program = config.argv[0]
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *config.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=limits.preexec if limits is not None else None,
            )
        except FileNotFoundError:
            os.close(read_fd)
            return out.failed((ErrorClass.INVALID_CONFIG, _explain_not_found(program, cwd, env)))
        except PermissionError:
            os.close(read_fd)
            return out.failed((ErrorClass.INVALID_CONFIG, f"program is not executable: {program}"))
        except ValueError as exc:  # e.g. a NUL byte in argv or env, which exec cannot pass
            os.close(read_fd)
            return out.failed((ErrorClass.INVALID_CONFIG, f"cannot start {program}: {exc}"))
        except OSError as exc:
            os.close(read_fd)
            return out.failed((ErrorClass.INFRASTRUCTURE, f"cannot start {program}: {exc}"))
        except subprocess.SubprocessError as exc:  # preexec_fn failed: the limits
            os.close(read_fd)
            return out.failed((ErrorClass.INFRASTRUCTURE, f"cannot limit {program}: {exc}"))
        finally:
            # The child holds its copy; ours must close or the pipe never reaches EOF.
            os.close(write_fd)

        pipe = os.fdopen(read_fd, "rb", buffering=0)
        remember(context.work_dir, context.attempt_id, process.pid)
        try:
            return await self._supervise(out, config, process, pipe, limits)
        except asyncio.CancelledError:
            # The agent itself is going away: leave nothing running behind it, and
            # reap the leader (SIGKILL is quick) so its transport is closed, not leaked.
            await self._kill_now(process, pipe, context.attempt_id)
            raise
        except Exception as exc:  # a bug or resource failure here, not the task's fault
            await self._kill_now(process, pipe, context.attempt_id)
            return out.failed((ErrorClass.INFRASTRUCTURE, f"supervising {program} failed: {exc!r}"))
        finally:
            forget(context.work_dir, context.attempt_id)

    async def _kill_now(
        self, process: asyncio.subprocess.Process, pipe: BinaryIO, attempt_id: int
    ) -> None:
        signal_group(process.pid, signal.SIGKILL)
        pipe.close()
        await asyncio.to_thread(kill_marked, attempt_mark(attempt_id))
        # A second cancel of the caller interrupts this wait; that is its right.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), timeout=self._kill_grace + 5)

    async def _supervise(
        self,
        out: ResultBuilder,
        config: CommandConfig,
        process: asyncio.subprocess.Process,
        pipe: BinaryIO,
        limits: AttemptLimits | None = None,
    ) -> TaskResult:
        task, context = out.task, out.context
        loop = asyncio.get_running_loop()
        pgid = process.pid  # start_new_session: the child leads its own group
        output = OutputTail(config.output_tail_bytes, context.report_output)
        transport, _ = await loop.connect_read_pipe(lambda: output, pipe)
        memory = _MemoryPeak()
        sampler = (
            asyncio.create_task(self._sample_memory(process.pid, memory, self._memory_interval))
            if self._memory_interval
            else None
        )
        watcher = limits.start_disk_watch(pgid) if limits is not None else None
        try:
            ending = await wait_for_exit(process, context.cancel_event, out.remaining())
            # After a normal exit this only finds leftovers (usually none: instant).
            await end_group(pgid, self._kill_grace)
            # Then what left the group (setsid, a double fork), found by its mark.
            await end_marked(attempt_mark(context.attempt_id), self._kill_grace)
            # And what also cleared its environment: still in the attempt's cgroup.
            if limits is not None:
                await asyncio.to_thread(limits.end_strays)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=self._kill_grace + 5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(output.closed), timeout=self._drain)
        finally:
            if sampler is not None:
                sampler.cancel()
            if watcher is not None:
                watcher.cancel()
            transport.close()

        code = process.returncode
        tail = output.tail()
        results: dict[str, Any] = {
            "exit_code": code,
            "output_tail": _decode_tail(tail[-RESULT_TAIL_BYTES:]),
            "output_bytes": output.total,
            # What the bounded tail let go: a flood costs the worker nothing, and says so.
            "output_dropped_bytes": output.total - len(tail),
            "timed_out": ending is Ending.TIMED_OUT,
        }
        metrics: dict[str, Any] = {}
        if memory.samples:
            metrics = {
                "peak_rss_mb": round(memory.peak_bytes / 1024**2, 1),
                "rss_sample_interval_seconds": self._memory_interval,
            }

        error: tuple[ErrorClass, str] | None
        verdict = limits.verdict(code, tail) if limits is not None else None
        if verdict is not None and ending is Ending.EXITED:
            status, error = ResultStatus.FAILED, verdict
        elif ending is Ending.TIMED_OUT:
            status = ResultStatus.TIMED_OUT
            error = (
                ErrorClass.TIMEOUT,
                f"timed out after {task.timeout_seconds:g} s; process group terminated",
            )
        elif ending is Ending.CANCELLED:
            status = ResultStatus.CANCELLED
            error = (ErrorClass.CANCELLED, "cancelled; process group terminated")
        elif code == 0:
            status, error = ResultStatus.COMPLETED, None
        elif code is not None and code < 0:
            name = _describe_signal(-code)
            # SIGKILL nobody here sent is most often the kernel's OOM killer, but
            # we cannot know, so the class stays task_failure and the text says "maybe".
            hint = " (possibly the out-of-memory killer)" if -code == signal.SIGKILL else ""
            status, error = (
                ResultStatus.FAILED,
                (ErrorClass.TASK_FAILURE, f"killed by {name}{hint}"),
            )
        else:
            status, error = ResultStatus.FAILED, (ErrorClass.TASK_FAILURE, f"exit code {code}")

        return out.finish(
            status, error, results=results, hardware_metrics=metrics, logs=encode_logs(tail)
        )

    @staticmethod
    async def _sample_memory(pid: int, memory: _MemoryPeak, interval: float) -> None:
        # The first sample after one interval: a freshly forked process says nothing.
        while True:
            await asyncio.sleep(interval)
            if not memory.sample(pid):
                return
