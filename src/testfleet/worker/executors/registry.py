"""Which executors a worker has, and their start and end around its life.

Callers: the worker CLI (``testfleet worker``) builds its mapping with
:func:`default_executors`, hands it to the agent, awaits
:func:`prepare_executors` before connecting and :func:`close_executors` at
exit; the dispatch benchmark and tests build the same mapping. Kept apart from
:mod:`testfleet.worker.executors.base` (the contract every executor imports),
because this module imports every executor.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from testfleet.domain.enums import TaskType
from testfleet.worker.executors.base import Executor
from testfleet.worker.executors.benchmark import BenchmarkExecutor
from testfleet.worker.executors.command import CommandExecutor
from testfleet.worker.executors.pytest_run import PytestExecutor
from testfleet.worker.executors.simulated import SimulatedExecutor


async def prepare_executors(executors: Mapping[TaskType, Executor]) -> None:
    """Let executors that keep something warm start it (``testfleet worker`` calls
    this once before connecting): the test executor starts a pytest process
    with pytest already imported, so a run's first chunk does not wait for it."""
    for executor in executors.values():
        await executor.prewarm()


async def close_executors(executors: Mapping[TaskType, Executor]) -> None:
    """End what :func:`prepare_executors` (and later attempts) kept running."""
    for executor in executors.values():
        await executor.close()


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
    executors: list[Executor] = [CommandExecutor(), SimulatedExecutor()]
    # Neither executor imports pytest or torch itself (their children do), so
    # importing both above costs nothing where those are missing.
    if tests_available():
        executors.append(PytestExecutor())
    if benchmarks_available():
        executors.append(BenchmarkExecutor())
    return {executor.task_type: executor for executor in executors}
