"""Task executors, one module per task type; the worker agent runs attempts through them.

See :mod:`testfleet.worker.executors.base` for the contract every executor keeps.
"""

from testfleet.worker.executors.base import ExecutionContext, Executor, default_executors
from testfleet.worker.executors.command import CommandExecutor
from testfleet.worker.executors.simulated import SimulatedExecutor

__all__ = [
    "CommandExecutor",
    "ExecutionContext",
    "Executor",
    "SimulatedExecutor",
    "default_executors",
]
