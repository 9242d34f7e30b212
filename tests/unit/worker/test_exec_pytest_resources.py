"""A ``test`` chunk with declared resources: its own pytest session runs with the
attempt's limits, and what the limits did is reported as such.

Real session children on tiny projects in tmp_path. The memory cgroup is a
directory of plain files here (a ``CgroupRoot`` in tmp_path): the session's
``preexec`` writes its pid there as it would into a real ``cgroup.procs``,
and a test that plays the OOM killer writes ``oom_kill 1`` into the group's
counter and kills its own process, which is what the kernel does.
"""

from __future__ import annotations

import asyncio
import resource
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from testfleet.domain.enums import ErrorClass, ResultStatus, TaskType
from testfleet.domain.pytest_tasks import TestChunkOutcome, TestOutcome
from testfleet.domain.resources import MemoryEnforcement, WorkerResources
from testfleet.domain.task import TaskSpec
from testfleet.worker.executors.base import ExecutionContext
from testfleet.worker.executors.pytest_run import PytestExecutor
from testfleet.worker.executors.resource_limits import CgroupRoot, ResourceLimiter
from testfleet.worker.pytest_sessions.sessions import SessionPool

MIB = 1024 * 1024
LIMIT = 300 * MIB


def write_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


def limited_task(project: Path, node_ids: list[str], **resources: object) -> TaskSpec:
    return TaskSpec(
        task_id="test-1",
        type=TaskType.TEST,
        timeout_seconds=120,
        config={"run_id": "run-1", "project": {"path": str(project)}, "node_ids": node_ids},
        requirements={"resources": resources},
    )


def limiter(cgroup: CgroupRoot | None) -> ResourceLimiter:
    totals = WorkerResources(
        memory_bytes=8 * 1024 * MIB,
        cpu_cores=1,
        disk_bytes=1024 * MIB,
        memory_enforcement=MemoryEnforcement.RLIMIT if cgroup is None else cgroup.version,
    )
    return ResourceLimiter(totals=totals, cores=(0,), cgroup=cgroup)


def context(tmp_path: Path, limits: ResourceLimiter) -> ExecutionContext:
    return ExecutionContext(
        worker_id="worker-test",
        attempt_id=7,
        attempt=1,
        cancel_event=asyncio.Event(),
        work_dir=tmp_path / "work",
        limiter=limits,
    )


@pytest.fixture
async def executor() -> AsyncIterator[PytestExecutor]:
    executor = PytestExecutor(pool=SessionPool(kill_grace_seconds=0.5, keep_zygotes=False))
    yield executor
    await executor.close()
    assert executor.pool.live_sessions() == []


async def test_the_session_runs_with_the_limits_and_an_allocation_past_them_is_out_of_memory(
    tmp_path: Path, executor: PytestExecutor
) -> None:
    project = write_project(
        tmp_path / "p",
        {
            "test_mem.py": f"""
                import os, resource

                def test_limits_bind_this_process():
                    assert resource.getrlimit(resource.RLIMIT_DATA) == ({LIMIT}, {LIMIT})
                    assert os.sched_getaffinity(0) == {{0}}

                def test_past_the_limit():
                    bytearray({2 * LIMIT})

                def test_after():
                    pass
            """
        },
    )
    node_ids = [
        f"test_mem.py::{name}"
        for name in ("test_limits_bind_this_process", "test_past_the_limit", "test_after")
    ]
    task = limited_task(project, node_ids, memory_bytes=LIMIT, cpu_cores=1)
    result = await executor.run(task, context(tmp_path, limiter(None)))
    outcome = TestChunkOutcome.model_validate(result.results)
    verdicts = {r.nodeid.split("::")[-1]: r.outcome for r in outcome.tests}
    assert verdicts == {
        "test_limits_bind_this_process": TestOutcome.PASSED,
        "test_past_the_limit": TestOutcome.FAILED,
        "test_after": TestOutcome.PASSED,
    }
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.OUT_OF_MEMORY
    assert result.error.message is not None
    assert (
        "test_mem.py::test_past_the_limit: an allocation failed at its memory limit of "
        "300 MiB (RLIMIT_DATA)" in result.error.message
    )
    # The session was the chunk's own: nothing is kept idle for the run.
    assert executor.pool.idle_sessions() == []
    # The worker's own process is not limited.
    assert resource.getrlimit(resource.RLIMIT_DATA)[0] != LIMIT


async def test_a_session_killed_by_its_memory_cgroup_is_out_of_memory_and_the_rest_run(
    tmp_path: Path, executor: PytestExecutor
) -> None:
    root = CgroupRoot(tmp_path / "cgroup" / "testfleet-1", MemoryEnforcement.CGROUP_V1)
    root.path.mkdir(parents=True)
    group = root.path / "attempt-7"
    project = write_project(
        tmp_path / "p",
        {
            "test_oom.py": f"""
                import os, signal
                from pathlib import Path

                GROUP = Path({str(group)!r})

                def test_in_the_group():
                    assert str(os.getpid()) in (GROUP / "cgroup.procs").read_text()

                def test_killed():
                    (GROUP / "memory.oom_control").write_text("oom_kill_disable 0\\noom_kill 1\\n")
                    os.kill(os.getpid(), signal.SIGKILL)

                def test_after():
                    pass
            """
        },
    )
    node_ids = [f"test_oom.py::{n}" for n in ("test_in_the_group", "test_killed", "test_after")]
    task = limited_task(project, node_ids, memory_bytes=LIMIT)
    result = await executor.run(task, context(tmp_path, limiter(root)))
    outcome = TestChunkOutcome.model_validate(result.results)
    by_name = {r.nodeid.split("::")[-1]: r for r in outcome.tests}
    assert by_name["test_in_the_group"].outcome is TestOutcome.PASSED
    assert by_name["test_after"].outcome is TestOutcome.PASSED  # in a new limited session
    killed = by_name["test_killed"]
    assert killed.crashed
    assert "killed for passing its memory limit of 300 MiB (cgroup_v1)" in killed.failure_text
    assert result.error is not None
    assert result.error.error_class is ErrorClass.OUT_OF_MEMORY
    assert "test_oom.py::test_killed: killed for passing its memory limit" in (
        result.error.message or ""
    )
    assert (group / "memory.limit_in_bytes").read_text() == str(LIMIT)


async def test_a_run_without_declared_resources_shares_its_session(
    tmp_path: Path, executor: PytestExecutor
) -> None:
    project = write_project(tmp_path / "p", {"test_a.py": "def test_a():\n    pass\n"})
    task = limited_task(project, ["test_a.py::test_a"])
    result = await executor.run(task, context(tmp_path, limiter(None)))
    assert result.status is ResultStatus.COMPLETED
    assert len(executor.pool.idle_sessions()) == 1  # kept for the run's next chunk
