"""The executor contract and helpers shared by every executor.

Callers: the worker agent picks the executor for ``task.type`` from
:func:`~testfleet.worker.executors.registry.default_executors` (or its own
mapping), builds an
:class:`ExecutionContext` for each attempt it accepts, awaits
:meth:`Executor.run`, and sends the :class:`TaskResult` back. The agent sets
``cancel_event`` when the coordinator cancels the attempt or the worker drains.

Contract: an executor never raises for a problem of the task (bad config,
missing program, failure, timeout, cancel); every outcome is a ``TaskResult``
with a classified error. It enforces ``task.timeout_seconds`` itself, so a
worker that loses its coordinator still stops runaway work. Only
``asyncio.CancelledError`` (the agent itself shutting down) propagates, after
the executor has stopped what it started.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from testfleet.clock import Clock, SystemClock
from testfleet.domain.credential_env import without_credentials
from testfleet.domain.enums import ErrorClass, ResultStatus, TaskType
from testfleet.domain.pytest_tasks import TestRecord
from testfleet.domain.result import SimulationStatus, TaskError, TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.worker.executors.task_processes import MARK_VARIABLE, attempt_mark

if TYPE_CHECKING:
    from testfleet.worker.executors.resource_limits import ResourceLimiter

#: TaskError.message is capped at 16 KiB; a pydantic error for a large config can be longer.
MAX_ERROR_MESSAGE_CHARS = 4096


@dataclass
class ExecutionContext:
    """What an executor knows about the attempt it runs, besides the task itself."""

    worker_id: str
    attempt_id: int
    attempt: int
    #: Set by the worker agent when the coordinator cancels the attempt.
    cancel_event: asyncio.Event
    #: A per-worker scratch/cache directory (may not exist yet).
    work_dir: Path
    #: Test tasks: node ids earlier attempts already reported (skip them).
    completed_tests: frozenset[str] = field(default_factory=frozenset)
    #: Test tasks: hand finished tests to the agent as they finish (it sends
    #: them to the coordinator while the attempt runs). None: nobody listens.
    report_tests: Callable[[list[TestRecord]], None] | None = None
    #: Output of the attempt as it is produced (the agent's live log stream,
    #: :mod:`testfleet.worker.log_stream`); returns at once and never fails.
    #: None: nobody listens. The result's ``logs`` are kept as before.
    report_output: Callable[[bytes], None] | None = None
    #: The worker agent's clock. Simulated work waits (and is timed) on it, so
    #: a fake clock runs a simulated task in fake time; executors that run a
    #: real child process time it and its timeout on real time, because the
    #: child lives on real time whatever the clock says.
    clock: Clock = field(default_factory=SystemClock)
    #: The worker's resource limiter (cores, cgroup root, totals): executors
    #: that start a child hold it to ``requirements.resources`` through it.
    #: None: nothing is enforced (tests, the in-process fleet).
    limiter: ResourceLimiter | None = None


class Executor(Protocol):
    """Runs one task type. Stateless between attempts, so one instance serves them all.

    ``prewarm`` and ``close`` frame the executor's life in a worker: the worker
    CLI awaits every executor's ``prewarm`` once before connecting and its
    ``close`` at exit (see :mod:`testfleet.worker.executors.registry`). An
    executor that keeps nothing warm inherits the no-ops of
    :class:`ExecutorBase`.
    """

    task_type: TaskType

    async def run(self, task: TaskSpec, context: ExecutionContext) -> TaskResult: ...

    async def prewarm(self) -> None:
        """Start what the first attempt would otherwise wait for (e.g. a warm process)."""
        ...

    async def close(self) -> None:
        """End whatever :meth:`prewarm` and the attempts since left running."""
        ...


class ExecutorBase:
    """No-op ``prewarm`` and ``close`` for the executors that keep nothing between
    attempts (command, simulated, benchmark): subclass it and write ``run``."""

    async def prewarm(self) -> None:
        """Nothing to start ahead of the first attempt."""

    async def close(self) -> None:
        """Nothing kept running between attempts."""


def attempt_environment(
    task: TaskSpec, context: ExecutionContext, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The worker's environment without its credentials, plus who is running: the
    task and attempt ids, the worker and its work directory (``TESTFLEET_*``),
    then ``extra`` (the task's own ``env``) on top, and last the attempt's
    process mark (:mod:`~testfleet.worker.executors.task_processes`), which a
    task cannot override: it is how the worker finds the task's processes
    that left its process group.

    Every executor's child gets this, so a task can tell which attempt it is
    (a retry can behave differently) and where it may keep files, and never
    inherits a token or key the worker was started with (see
    :mod:`testfleet.domain.credential_env`).
    """
    return {
        **without_credentials(os.environ),
        "TESTFLEET_TASK_ID": task.task_id,
        "TESTFLEET_ATTEMPT": str(context.attempt),
        "TESTFLEET_ATTEMPT_ID": str(context.attempt_id),
        "TESTFLEET_WORKER_ID": context.worker_id,
        "TESTFLEET_WORK_DIR": str(context.work_dir),
        **(extra or {}),
        MARK_VARIABLE: attempt_mark(context.attempt_id),
    }


def clip_message(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    return message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."


#: How an attempt failed: the class and the message of its ``TaskError``.
Failure = tuple[ErrorClass, str]
_Config = TypeVar("_Config", bound=BaseModel)


class ResultBuilder:
    """One attempt's result in the making: the prologue every executor shares.

    Each executor's ``run`` makes one first thing, so the attempt's time runs
    from its start whatever ends it, then reads its config with
    :meth:`parse_config`; every ``TaskResult`` it returns comes from
    :meth:`finish` (or :meth:`failed`), which fills the fields every executor
    must fill, the same way.
    """

    def __init__(
        self,
        task: TaskSpec,
        context: ExecutionContext,
        *,
        is_simulated: bool,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``is_simulated``: only the simulated executor says True (design invariant 6).
        ``timer`` reads the time the attempt is measured by: real seconds by
        default; the simulated executor passes its context's clock, on which
        it waits."""
        self.task = task
        self.context = context
        self.is_simulated = is_simulated
        self._timer = timer
        self.started = timer()

    def elapsed(self) -> float:
        return self._timer() - self.started

    def remaining(self) -> float:
        """Seconds left of ``task.timeout_seconds`` (negative once past it)."""
        return self.task.timeout_seconds - self.elapsed()

    def parse_config(self, model: type[_Config], *, prefix: str = "") -> _Config | TaskResult:
        """``task.config`` as ``model``, or the failed (``invalid_config``) result
        saying why; ``prefix`` goes before pydantic's message."""
        try:
            return model.model_validate(self.task.config)
        except ValidationError as exc:
            return self.failed((ErrorClass.INVALID_CONFIG, f"{prefix}{exc}"))

    def failed(self, error: Failure) -> TaskResult:
        """The attempt failed before it produced anything (``status: failed``)."""
        return self.finish(ResultStatus.FAILED, error)

    def finish(
        self,
        status: ResultStatus,
        error: Failure | None = None,
        *,
        results: dict[str, Any] | None = None,
        hardware_metrics: dict[str, Any] | None = None,
        logs: str = "",
    ) -> TaskResult:
        """The attempt's result, timed from when this builder was made."""
        return TaskResult(
            task_id=self.task.task_id,
            worker_id=self.context.worker_id,
            status=status,
            execution_time_seconds=max(0.0, self.elapsed()),
            hardware_metrics=hardware_metrics or {},
            results=results or {},
            simulation_status=SimulationStatus(is_simulated=self.is_simulated),
            logs=logs,
            error=(
                TaskError(error_class=error[0], message=clip_message(error[1])) if error else None
            ),
        )
