"""Per-task limits with real child processes: memory, cores, disk, and how each ending is classed.

Every child here is held by the very limit under test (a hog's allocation is
refused by its own rlimit, or its cgroup kills it), so nothing can take more
than a few hundred MiB of the machine. No test waits on wall time: the disk
scan runs every 20 ms and the tests wait for the attempt's end.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testfleet.domain.enums import ErrorClass, ResultStatus
from testfleet.domain.resources import MemoryEnforcement, TaskResources, WorkerResources
from testfleet.domain.task import TaskSpec
from testfleet.worker.executors.base import ExecutionContext
from testfleet.worker.executors.command import CommandExecutor
from testfleet.worker.executors.resource_limits import (
    AttemptLimits,
    CgroupRoot,
    ResourceLimiter,
    directory_size,
    find_cgroup_root,
)
from testfleet.worker.executors.stale_cgroups import remove_stale_groups

PY = sys.executable
MIB = 1024**2


def limited_task(code: str, task_id: str = "cmd-1", **resources: Any) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "task_id": task_id,
            "type": "command",
            "timeout_seconds": 60,
            "config": {"argv": [PY, "-c", code]},
            "requirements": {"resources": resources},
        }
    )


def limiter(cores: tuple[int, ...] = (0,), cgroup: CgroupRoot | None = None) -> ResourceLimiter:
    totals = WorkerResources(
        memory_bytes=8 * 1024 * MIB,
        cpu_cores=len(cores),
        disk_bytes=1024 * MIB,
        memory_enforcement=cgroup.version if cgroup else MemoryEnforcement.RLIMIT,
    )
    return ResourceLimiter(totals=totals, cores=cores, cgroup=cgroup, disk_scan_seconds=0.02)


def context_for(work_dir: Path, attempt_id: int, held: ResourceLimiter) -> ExecutionContext:
    return ExecutionContext(
        worker_id="worker-test",
        attempt_id=attempt_id,
        attempt=1,
        cancel_event=asyncio.Event(),
        work_dir=work_dir,
        limiter=held,
    )


@pytest.fixture
def executor() -> CommandExecutor:
    return CommandExecutor(kill_grace_seconds=0.5, memory_sample_interval_seconds=None)


# --------------------------------------------------------------------------- memory

HOG = "b = bytearray(512 * 1024 * 1024); print('allocated')"


async def test_a_task_past_its_memory_limit_ends_out_of_memory_and_its_neighbour_is_unaffected(
    executor: CommandExecutor, tmp_path: Path
) -> None:
    held = limiter(cores=(0, 1))
    hog = limited_task(HOG, "hog", memory_bytes="64MiB")
    calm = limited_task("print('fine')", "calm", memory_bytes="64MiB")
    hogged, fine = await asyncio.gather(
        executor.run(hog, context_for(tmp_path, 1, held)),
        executor.run(calm, context_for(tmp_path, 2, held)),
    )
    assert hogged.status is ResultStatus.FAILED
    assert hogged.error is not None
    assert hogged.error.error_class is ErrorClass.OUT_OF_MEMORY
    assert "memory limit of 64 MiB (RLIMIT_DATA)" in hogged.error.message
    assert "allocated" not in hogged.results["output_tail"]
    assert fine.status is ResultStatus.COMPLETED
    assert fine.results["output_tail"] == "fine\n"


async def test_a_task_within_its_memory_limit_completes(
    executor: CommandExecutor, tmp_path: Path
) -> None:
    code = "b = bytearray(32 * 1024 * 1024); print('ok')"
    result = await executor.run(
        limited_task(code, memory_bytes="256MiB"), context_for(tmp_path, 1, limiter())
    )
    assert result.status is ResultStatus.COMPLETED, result.error


async def test_a_failure_that_only_mentions_memory_is_not_out_of_memory_without_a_limit(
    executor: CommandExecutor, tmp_path: Path
) -> None:
    code = "import sys; print('MemoryError'); sys.exit(3)"
    result = await executor.run(
        limited_task(code, cpu_cores=1), context_for(tmp_path, 1, limiter())
    )
    assert result.error is not None
    assert result.error.error_class is ErrorClass.TASK_FAILURE


@pytest.fixture
def cgroup() -> Iterator[CgroupRoot]:
    root = find_cgroup_root(name=f"testfleet-test-{os.getpid()}")
    if root is None:
        pytest.skip("no writable memory cgroup on this machine (rlimits are tested above)")
    yield root
    os.rmdir(root.path)


#: Four children of 48 MiB each: each is within a 128 MiB rlimit, together they are not.
SPREAD = """
import subprocess, sys, time
child = "b = b'x' * (48 << 20); import time; time.sleep(30)"
procs = [subprocess.Popen([sys.executable, "-c", child]) for _ in range(4)]
while all(p.poll() is None for p in procs):
    time.sleep(0.02)
sys.exit(1)
"""


async def test_a_memory_cgroup_holds_the_tasks_processes_together(
    executor: CommandExecutor, tmp_path: Path, cgroup: CgroupRoot
) -> None:
    held = limiter(cgroup=cgroup)
    result = await executor.run(
        limited_task(SPREAD, memory_bytes="128MiB"), context_for(tmp_path, 7, held)
    )
    assert result.error is not None
    assert result.error.error_class is ErrorClass.OUT_OF_MEMORY, result.error
    assert f"memory limit of 128 MiB ({cgroup.version.value})" in result.error.message
    assert not (cgroup.path / "attempt-7").exists()  # removed with the attempt


# --------------------------------------------------------------------------- cores


async def test_a_task_limited_to_one_core_sees_one_core(
    executor: CommandExecutor, tmp_path: Path
) -> None:
    code = "import os; print(len(os.sched_getaffinity(0)))"
    held = limiter(cores=tuple(sorted(os.sched_getaffinity(0))))
    result = await executor.run(limited_task(code, cpu_cores=1), context_for(tmp_path, 1, held))
    assert result.status is ResultStatus.COMPLETED, result.error
    assert result.results["output_tail"] == "1\n"


def test_running_attempts_get_distinct_cores_and_give_them_back(tmp_path: Path) -> None:
    held = limiter(cores=(0, 1, 2, 3))
    first = held.begin(1, TaskResources(cpu_cores=2), tmp_path)
    second = held.begin(2, TaskResources(cpu_cores=2), tmp_path)
    assert (first.cores, second.cores) == ((0, 1), (2, 3))
    first.close()
    assert held.begin(3, TaskResources(cpu_cores=1), tmp_path).cores == (0,)
    # More than are free (the coordinator should not do this): still held to the count.
    assert len(held.begin(4, TaskResources(cpu_cores=3), tmp_path).cores) == 3


# --------------------------------------------------------------------------- disk

#: Writes 4 MiB in files of 256 KiB (each under the file limit), then waits to be ended.
FILL = """
import os, time
for i in range(16):
    with open(f"part-{i}", "wb") as f:
        f.write(os.urandom(256 * 1024))
print('written', flush=True)
time.sleep(60)
"""


async def test_a_task_filling_its_directory_past_the_limit_ends_resource_limit(
    executor: CommandExecutor, tmp_path: Path
) -> None:
    result = await executor.run(
        limited_task(FILL, disk_bytes="1MiB"), context_for(tmp_path, 5, limiter())
    )
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.RESOURCE_LIMIT
    assert "work directory passed its disk limit of 1 MiB" in result.error.message
    assert not (tmp_path / "attempts" / "5").exists()  # its directory is removed after


async def test_one_file_past_the_limit_ends_resource_limit(
    executor: CommandExecutor, tmp_path: Path
) -> None:
    code = "open('big', 'wb').write(b'x' * (2 * 1024 * 1024))"
    result = await executor.run(
        limited_task(code, disk_bytes="1MiB"), context_for(tmp_path, 6, limiter())
    )
    assert result.error is not None
    assert result.error.error_class is ErrorClass.RESOURCE_LIMIT
    assert "a file passed its disk limit of 1 MiB (RLIMIT_FSIZE)" in result.error.message


async def test_a_disk_limited_task_runs_in_its_own_directory(
    executor: CommandExecutor, tmp_path: Path
) -> None:
    code = "import os; print(os.getcwd())"
    result = await executor.run(
        limited_task(code, disk_bytes="1MiB"), context_for(tmp_path, 9, limiter())
    )
    assert result.status is ResultStatus.COMPLETED, result.error
    assert result.results["output_tail"].strip() == str(tmp_path / "attempts" / "9")


def test_directory_size_counts_files_and_stops_at_its_entry_budget(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for i in range(5):
        (tmp_path / "sub" / f"f{i}").write_bytes(b"x" * 8192)
    assert directory_size(tmp_path) >= 5 * 8192
    assert directory_size(tmp_path, max_entries=2) < 5 * 8192


# --------------------------------------------------------------------------- cgroup discovery


def test_a_writable_v1_hierarchy_is_found(tmp_path: Path) -> None:
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    root = find_cgroup_root(v1=v1, v2=tmp_path / "none", name="tf")
    assert root == CgroupRoot(v1 / "tf", MemoryEnforcement.CGROUP_V1)


def test_no_cgroup_means_rlimits_only(tmp_path: Path) -> None:
    assert find_cgroup_root(v1=tmp_path / "a", v2=tmp_path / "b") is None


def test_the_oom_kill_counter_is_read_from_either_version(tmp_path: Path) -> None:
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    assert CgroupRoot(tmp_path, MemoryEnforcement.CGROUP_V1).oom_kills(tmp_path) == 2
    assert CgroupRoot(tmp_path, MemoryEnforcement.CGROUP_V2).oom_kills(tmp_path) == 1
    assert (
        CgroupRoot(tmp_path / "gone", MemoryEnforcement.CGROUP_V1).oom_kills(tmp_path / "gone") == 0
    )


def test_a_clean_exit_is_never_blamed_on_a_limit(tmp_path: Path) -> None:
    limits = AttemptLimits(limiter(), 1, TaskResources(memory_bytes=64 * MIB, disk_bytes=MIB))
    assert limits.verdict(0, b"MemoryError File too large") is None
    assert limits.verdict(1, b"exit 1") is None


def test_groups_of_dead_workers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = tmp_path / "testfleet-999999999"
    (dead / "attempt-3").mkdir(parents=True)
    alive = tmp_path / f"testfleet-{os.getpid()}"
    alive.mkdir()
    other = tmp_path / "someone-else"
    other.mkdir()
    assert remove_stale_groups(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])
