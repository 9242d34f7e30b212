"""A task child that leaves its process group *and* clears its environment (``env -i``,
then ``setsid`` and a double fork) carries neither of the handles the worker
has without cgroups (its group, ``TESTFLEET_PROCESS_MARK``). Where the worker
has a memory cgroup, every attempt runs in a group of its own, limits or not,
and what is still a member when the attempt ends is killed.

Run on the machine's real memory cgroup (cgroup v1 here), skipped where this
process may not make groups.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from process_signals import all_exited

from testfleet.domain.enums import ResultStatus, TaskType
from testfleet.domain.resources import WorkerResources
from testfleet.domain.task import TaskSpec
from testfleet.worker.executors.base import ExecutionContext
from testfleet.worker.executors.command import CommandExecutor
from testfleet.worker.executors.resource_limits import ResourceLimiter, find_cgroup_root
from testfleet.worker.executors.task_processes import attempt_mark, find_marked

PY = sys.executable
ESCAPE = (
    "import os, sys, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        print(os.getpid(), flush=True)\n"
    "        time.sleep(600)\n"
    "    os._exit(0)\n"
)


@pytest.fixture
def limiter() -> Iterator[ResourceLimiter]:
    root = find_cgroup_root(name=f"testfleet-{os.getpid()}-escape")
    if root is None:
        pytest.skip("no writable memory cgroup on this machine")
    totals = WorkerResources(
        memory_bytes=1024**3, cpu_cores=1, disk_bytes=1024**3, memory_enforcement=root.version
    )
    limiter = ResourceLimiter(totals=totals, cores=(0,), cgroup=root)
    yield limiter
    limiter.close()
    assert not root.path.exists()


async def test_a_cleared_environment_double_fork_escape_ends_with_the_attempt(
    limiter: ResourceLimiter, tmp_path: Path
) -> None:
    pid_file = tmp_path / "escaped.pid"
    # env -i: the escapee has no TESTFLEET_PROCESS_MARK; setsid: no process group.
    argv = [
        "sh",
        "-c",
        f"env -i {PY} -c '{ESCAPE}' > {pid_file}; "
        f"while [ ! -s {pid_file} ]; do sleep 0.01; done; echo done",
    ]
    task = TaskSpec(
        task_id="escape-1",
        type=TaskType.COMMAND,
        timeout_seconds=60,
        config={"argv": argv},
    )
    context = ExecutionContext(
        worker_id="w",
        attempt_id=41,
        attempt=1,
        cancel_event=asyncio.Event(),
        work_dir=tmp_path / "work",
        limiter=limiter,
    )
    executor = CommandExecutor(kill_grace_seconds=0.5)
    result = await executor.run(task, context)

    assert result.status is ResultStatus.COMPLETED
    (pid,) = [int(p) for p in pid_file.read_text().split()]
    assert find_marked(attempt_mark(41)) == []  # the mark could not have found it
    assert await all_exited([pid])
    assert not (limiter.cgroup.path / "attempt-41").exists()  # type: ignore[union-attr]
