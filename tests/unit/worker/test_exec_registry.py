"""The executor registry: prewarm and close reach every executor through its protocol;
``--allow-types`` leaves out the executors a worker's operator refuses."""

from __future__ import annotations

import pytest

from testfleet.domain.enums import TaskType
from testfleet.domain.result import TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.worker.executors.base import ExecutionContext, Executor, ExecutorBase
from testfleet.worker.executors.registry import (
    AllowTypesError,
    choose_executors,
    close_executors,
    default_executors,
    parse_allowed_types,
    prepare_executors,
)


class Plain(ExecutorBase):
    """An executor that keeps nothing warm: the base's no-ops serve it."""

    task_type = TaskType.COMMAND

    async def run(self, task: TaskSpec, context: ExecutionContext) -> TaskResult:
        raise AssertionError("not run here")


class Warm(Plain):
    task_type = TaskType.TEST

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def prewarm(self) -> None:
        self.calls.append("prewarm")

    async def close(self) -> None:
        self.calls.append("close")


async def test_prepare_and_close_call_every_executor_once() -> None:
    warm = Warm()
    executors: dict[TaskType, Executor] = {TaskType.COMMAND: Plain(), TaskType.TEST: warm}
    await prepare_executors(executors)
    assert warm.calls == ["prewarm"]
    await close_executors(executors)
    assert warm.calls == ["prewarm", "close"]


# --------------------------------------------------------------------------- --allow-types


def test_allow_types_parses_a_comma_separated_list() -> None:
    assert parse_allowed_types("test, benchmark") == {TaskType.TEST, TaskType.BENCHMARK}
    assert parse_allowed_types("simulated,simulated,") == {TaskType.SIMULATED}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "test,shell",
            "--allow-types: unknown task type 'shell'; valid: command, simulated, test, benchmark",
        ),
        (" , ", "--allow-types is empty: give one or more of command, simulated, test, benchmark"),
        ("Test", "unknown task type 'Test'"),
    ],
)
def test_allow_types_refuses_what_is_not_a_task_type(text: str, expected: str) -> None:
    with pytest.raises(AllowTypesError) as refused:
        parse_allowed_types(text)
    assert expected in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_refused_type_has_no_executor_and_is_reported_as_refused() -> None:
    everything = default_executors()
    chosen = choose_executors({TaskType.TEST, TaskType.SIMULATED, TaskType.BENCHMARK})
    assert TaskType.COMMAND not in chosen.executors
    assert chosen.refused == [TaskType.COMMAND]
    assert set(chosen.executors) == set(everything) - {TaskType.COMMAND}
    # Allowed but not installed here (torch or pytest missing): named, not kept.
    assert chosen.unavailable == [
        t for t in (TaskType.TEST, TaskType.BENCHMARK) if t not in everything
    ]


def test_without_allow_types_every_executor_is_kept() -> None:
    chosen = choose_executors(None)
    assert set(chosen.executors) == set(default_executors())
    assert chosen.refused == chosen.unavailable == []
