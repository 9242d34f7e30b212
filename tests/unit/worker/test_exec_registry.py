"""The executor registry: prewarm and close reach every executor through its protocol."""

from __future__ import annotations

from testfleet.domain.enums import TaskType
from testfleet.domain.result import TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.worker.executors.base import ExecutionContext, Executor, ExecutorBase
from testfleet.worker.executors.registry import close_executors, prepare_executors


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
