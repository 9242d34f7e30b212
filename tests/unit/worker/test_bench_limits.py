"""Benchmark runners held to ``requirements.resources``: stand-in runners (small Python
scripts, no torch) under a real ResourceLimiter, as in test_exec_resource_limits.py.

Every allocation here is refused by the very rlimit under test (64 MiB), so no
child can take more than that of the machine; the limiter has no cgroup, so the
rlimit path is what runs on every machine. No test waits on wall time: the disk
scan runs every 20 ms and the tests wait for the attempt's end.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from testfleet.domain.benchmark import BatchSizeError, BatchSizeMeasurement, BenchmarkOutcome
from testfleet.domain.enums import ErrorClass, ResultStatus
from testfleet.domain.resources import MemoryEnforcement, WorkerResources
from testfleet.domain.result import TaskResult, decode_logs
from testfleet.domain.task import TaskSpec
from testfleet.worker.benchmarking.protocol import BatchLine, FinalLine, SetupLine, encode_line
from testfleet.worker.executors.base import ExecutionContext
from testfleet.worker.executors.benchmark import BenchmarkExecutor
from testfleet.worker.executors.resource_limits import ResourceLimiter

PY = sys.executable
MIB = 1024**2
LIMIT = "memory limit of 64 MiB (RLIMIT_DATA)"
#: Far past the 64 MiB limit: refused by the rlimit before a byte is touched.
ALLOCATE = "b = bytearray(512 * 1024 * 1024)\n"
SETUP = SetupLine(
    model_source="config", device="cpu", device_name="Stand-in CPU", planned_batch_sizes=[1, 2]
)
MEASURED_1 = BatchLine(
    batch_size=1,
    measurement=BatchSizeMeasurement(
        latency_ms=1.0,
        latency_p50_ms=1.0,
        latency_p90_ms=1.0,
        latency_p99_ms=1.0,
        throughput_items_per_second=100.0,
        memory_mb=10.0,
        iterations=3,
    ),
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def limiter(cores: tuple[int, ...] = (0,)) -> ResourceLimiter:
    totals = WorkerResources(
        memory_bytes=8 * 1024 * MIB,
        cpu_cores=len(cores),
        disk_bytes=1024 * MIB,
        memory_enforcement=MemoryEnforcement.RLIMIT,
    )
    return ResourceLimiter(totals=totals, cores=cores, disk_scan_seconds=0.02)


def context_for(work_dir: Path, held: ResourceLimiter, attempt_id: int = 1) -> ExecutionContext:
    return ExecutionContext(
        worker_id="worker-test",
        attempt_id=attempt_id,
        attempt=1,
        cancel_event=asyncio.Event(),
        work_dir=work_dir,
        limiter=held,
    )


def limited_task(**resources: Any) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "task_id": "bench-1",
            "type": "benchmark",
            "timeout_seconds": 60,
            "requirements": {"resources": resources},
            "config": {"model": "gpt2", "batch_sizes": [1, 2]},
        }
    )


def stand_in(body: str, lines: Sequence[Any] = ()) -> list[str]:
    """A runner that reads its request, writes ``lines`` to stdout, then runs ``body``."""
    payload = b"".join(encode_line(line) for line in lines).decode()
    script = textwrap.dedent(
        """
        import json, os, sys, time
        json.loads(sys.stdin.read())
        sys.stdout.write({payload!r})
        sys.stdout.flush()
        """
    ).format(payload=payload)
    return [PY, "-c", script + textwrap.dedent(body)]


async def run(command: list[str], task: TaskSpec, context: ExecutionContext) -> TaskResult:
    executor = BenchmarkExecutor(kill_grace_seconds=0.5, runner_command=command)
    return await executor.run(task, context)


def outcome_of(result: TaskResult) -> BenchmarkOutcome:
    return BenchmarkOutcome.model_validate(result.results)


# --------------------------------------------------------------------------- memory


async def test_a_runner_allocating_past_its_memory_limit_ends_out_of_memory(
    tmp_path: Path,
) -> None:
    result = await run(
        stand_in(ALLOCATE + "print('allocated', file=sys.stderr)"),
        limited_task(memory_bytes="64MiB"),
        context_for(tmp_path, limiter()),
    )
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.OUT_OF_MEMORY, result.error
    assert f"an allocation failed at its {LIMIT}" in result.error.message
    assert "allocated" not in decode_logs(result.logs)


async def test_a_sweep_that_hits_its_memory_limit_keeps_the_sizes_measured_before(
    tmp_path: Path,
) -> None:
    result = await run(
        stand_in(ALLOCATE, [SETUP, MEASURED_1]),
        limited_task(memory_bytes="64MiB"),
        context_for(tmp_path, limiter()),
    )
    # As without limits: where memory ends is part of a sweep's answer.
    assert result.status is ResultStatus.COMPLETED, result.error
    outcome = outcome_of(result)
    assert set(outcome.batch_sizes) == {"1"}
    assert outcome.errors["2"].error_class is ErrorClass.OUT_OF_MEMORY
    assert LIMIT in outcome.errors["2"].message


async def test_an_out_of_memory_the_runner_caught_names_the_limit_it_ran_under(
    tmp_path: Path,
) -> None:
    # As the real runner does: the batch size's MemoryError becomes its error line.
    caught = BatchLine(
        batch_size=1,
        error=BatchSizeError(error_class=ErrorClass.OUT_OF_MEMORY, message="MemoryError"),
    )
    result = await run(
        stand_in("", [SETUP, caught, FinalLine(stop_reason="out_of_memory")]),
        limited_task(memory_bytes="64MiB"),
        context_for(tmp_path, limiter()),
    )
    assert result.error is not None
    assert result.error.error_class is ErrorClass.OUT_OF_MEMORY
    assert result.error.message == f"batch size 1: MemoryError (under its {LIMIT})"
    assert outcome_of(result).errors["1"].message == f"MemoryError (under its {LIMIT})"


async def test_within_its_memory_limit_the_runner_completes(tmp_path: Path) -> None:
    final = FinalLine(stop_reason="completed")
    result = await run(
        stand_in("b = bytearray(8 * 1024 * 1024)\n", [SETUP, MEASURED_1, final]),
        limited_task(memory_bytes="64MiB"),
        context_for(tmp_path, limiter()),
    )
    assert result.status is ResultStatus.COMPLETED, result.error
    assert outcome_of(result).errors == {}


# --------------------------------------------------------------------------- cores


async def test_a_runner_limited_to_one_core_sees_one_core(tmp_path: Path) -> None:
    body = "print('cores', len(os.sched_getaffinity(0)), file=sys.stderr)\n"
    held = limiter(cores=tuple(sorted(os.sched_getaffinity(0))))
    result = await run(
        stand_in(body, [SETUP, MEASURED_1, FinalLine(stop_reason="completed")]),
        limited_task(cpu_cores=1),
        context_for(tmp_path, held),
    )
    assert result.status is ResultStatus.COMPLETED, result.error
    assert "cores 1\n" in decode_logs(result.logs)


# --------------------------------------------------------------------------- disk

#: Writes 4 MiB in its cwd in files of 256 KiB (each under the file limit), then waits.
FILL = """
print('cwd', os.getcwd(), file=sys.stderr, flush=True)
for i in range(16):
    with open(f"part-{i}", "wb") as f:
        f.write(os.urandom(256 * 1024))
time.sleep(60)
"""


async def test_a_runner_filling_its_directory_past_the_disk_limit_ends_resource_limit(
    tmp_path: Path,
) -> None:
    result = await run(
        stand_in(FILL, [SETUP]),
        limited_task(disk_bytes="1MiB"),
        context_for(tmp_path, limiter(), attempt_id=5),
    )
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.RESOURCE_LIMIT, result.error
    assert "work directory passed its disk limit of 1 MiB" in result.error.message
    attempt_dir = tmp_path / "attempts" / "5"
    assert f"cwd {attempt_dir}\n" in decode_logs(result.logs)  # it ran in its own directory
    assert not attempt_dir.exists()  # removed after


async def test_limits_that_cannot_be_applied_are_an_infrastructure_failure(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "work"
    blocked.mkdir()
    (blocked / "attempts").write_text("a file where the attempts' directory should be")
    result = await run(
        stand_in("", [SETUP]),
        limited_task(disk_bytes="1MiB"),
        context_for(blocked, limiter()),
    )
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INFRASTRUCTURE
    assert result.error.message.startswith("cannot apply its limits")
