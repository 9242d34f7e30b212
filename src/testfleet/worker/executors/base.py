"""The executor contract and helpers shared by every executor.

Callers: the worker agent picks the executor for ``task.type`` from
:func:`default_executors` (or its own mapping), builds an
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
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from testfleet.domain.enums import ErrorClass, ResultStatus, TaskType
from testfleet.domain.pytest_tasks import TestRecord
from testfleet.domain.result import SimulationStatus, TaskError, TaskResult
from testfleet.domain.task import TaskSpec

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


class Executor(Protocol):
    """Runs one task type. Stateless between attempts, so one instance serves them all."""

    task_type: TaskType

    async def run(self, task: TaskSpec, context: ExecutionContext) -> TaskResult: ...


def attempt_environment(
    task: TaskSpec, context: ExecutionContext, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The worker's environment plus who is running: the task and attempt ids, the
    worker and its work directory (``TESTFLEET_*``), then ``extra`` on top.

    Every executor's child gets this, so a task can tell which attempt it is
    (a retry can behave differently) and where it may keep files.
    """
    return {
        **os.environ,
        "TESTFLEET_TASK_ID": task.task_id,
        "TESTFLEET_ATTEMPT": str(context.attempt),
        "TESTFLEET_ATTEMPT_ID": str(context.attempt_id),
        "TESTFLEET_WORKER_ID": context.worker_id,
        "TESTFLEET_WORK_DIR": str(context.work_dir),
        **(extra or {}),
    }


def clip_message(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE_CHARS:
        return message
    return message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."


def build_result(
    task: TaskSpec,
    context: ExecutionContext,
    *,
    status: ResultStatus,
    execution_time_seconds: float,
    is_simulated: bool,
    error: tuple[ErrorClass, str] | None = None,
    results: dict[str, Any] | None = None,
    hardware_metrics: dict[str, Any] | None = None,
    logs: str = "",
) -> TaskResult:
    """One place that fills the fields every executor must fill, the same way."""
    return TaskResult(
        task_id=task.task_id,
        worker_id=context.worker_id,
        status=status,
        execution_time_seconds=max(0.0, execution_time_seconds),
        hardware_metrics=hardware_metrics or {},
        results=results or {},
        simulation_status=SimulationStatus(is_simulated=is_simulated),
        logs=logs,
        error=(TaskError(error_class=error[0], message=clip_message(error[1])) if error else None),
    )


async def prepare_executors(executors: Mapping[TaskType, Executor]) -> None:
    """Let executors that keep something warm start it (``testfleet worker`` calls
    this once before connecting): the test executor starts a pytest process
    with pytest already imported, so a run's first chunk does not wait for it."""
    for executor in executors.values():
        prewarm = getattr(executor, "prewarm", None)
        if prewarm is not None:
            await prewarm()


async def close_executors(executors: Mapping[TaskType, Executor]) -> None:
    """End what :func:`prepare_executors` (and later attempts) kept running."""
    for executor in executors.values():
        close = getattr(executor, "close", None)
        if close is not None:
            await close()


def benchmarks_available() -> bool:
    """Whether torch and transformers are installed (found, not imported: that takes seconds)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


def tests_available() -> bool:
    """Whether pytest is installed (found, not imported: the worker never imports it)."""
    return importlib.util.find_spec("pytest") is not None


def default_executors() -> dict[TaskType, Executor]:
    """The executors this worker has: ``command`` and ``simulated`` always,
    ``test`` where pytest is installed, and ``benchmark`` where torch and
    transformers are installed, so a worker without them never advertises (or
    accepts) those task types."""
    # Imported here: those modules import this one for the contract.
    from testfleet.worker.executors.command import CommandExecutor
    from testfleet.worker.executors.simulated import SimulatedExecutor

    executors: list[Executor] = [CommandExecutor(), SimulatedExecutor()]
    if tests_available():
        from testfleet.worker.executors.pytest_run import PytestExecutor

        executors.append(PytestExecutor())
    if benchmarks_available():
        from testfleet.worker.executors.benchmark import BenchmarkExecutor

        executors.append(BenchmarkExecutor())
    return {executor.task_type: executor for executor in executors}
