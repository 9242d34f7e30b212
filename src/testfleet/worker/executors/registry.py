"""Which executors a worker has, and their start and end around its life.

Callers: the worker CLI (``testfleet worker``) builds its mapping with
:func:`choose_executors` (:func:`default_executors` less what ``--allow-types``
leaves out), hands it to the agent, awaits
:func:`prepare_executors` before connecting and :func:`close_executors` at
exit; the dispatch benchmark and tests build the same mapping. Kept apart from
:mod:`testfleet.worker.executors.base` (the contract every executor imports),
because this module imports every executor.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection, Mapping
from dataclasses import dataclass

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


class AllowTypesError(ValueError):
    """``--allow-types`` names no type, or a type that does not exist; the message
    names the valid ones."""


def parse_allowed_types(text: str) -> frozenset[TaskType]:
    """``--allow-types``: task types separated by commas (``test,benchmark``).

    Called by ``testfleet worker`` before anything starts; raises
    :class:`AllowTypesError` with a one-line message naming the valid types.
    """
    valid = ", ".join(t.value for t in TaskType)
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise AllowTypesError(f"--allow-types is empty: give one or more of {valid}")
    unknown = [name for name in names if name not in {t.value for t in TaskType}]
    if unknown:
        listed = ", ".join(repr(name) for name in dict.fromkeys(unknown))
        raise AllowTypesError(f"--allow-types: unknown task type {listed}; valid: {valid}")
    return frozenset(TaskType(name) for name in names)


#: What a worker lacks for a task type it has no executor for (see default_executors).
MISSING_FOR: dict[TaskType, str] = {
    TaskType.TEST: "pytest is not installed",
    TaskType.BENCHMARK: "torch and transformers are not installed",
}


@dataclass(frozen=True, slots=True)
class ExecutorChoice:
    """What a worker runs, after its operator's ``--allow-types``."""

    #: The executors it has and is allowed to use: what it advertises and accepts.
    executors: dict[TaskType, Executor]
    #: Types it has an executor for but is not allowed to run (reported in its
    #: capabilities, so an unschedulable reason can say so).
    refused: list[TaskType]
    #: Types allowed but not runnable here (pytest, or torch and transformers,
    #: are not installed): the CLI warns about them.
    unavailable: list[TaskType]


def choose_executors(allowed: Collection[TaskType] | None = None) -> ExecutorChoice:
    """:func:`default_executors`, keeping only ``allowed`` (None: all of them).

    A refused type has no executor at all: the scheduler never places it here
    (the worker does not advertise it), and were an assignment to arrive anyway
    the agent would reject it as a type it has no executor for.
    """
    available = default_executors()
    if allowed is None:
        return ExecutorChoice(available, [], [])
    kept = {task_type: ex for task_type, ex in available.items() if task_type in allowed}
    return ExecutorChoice(
        executors=kept,
        refused=[t for t in TaskType if t in available and t not in allowed],
        unavailable=[t for t in TaskType if t in allowed and t not in available],
    )
