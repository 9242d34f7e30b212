"""The runner's sweep driver with a fake measurement, and its refusals as a child process
(those fail before torch is imported, so they take a fraction of a second)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testfleet.domain.benchmark import BatchSizeMeasurement, BenchmarkConfig
from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.autobatch import StopReason
from testfleet.worker.benchmarking.protocol import BatchLine, FatalLine, parse_line
from testfleet.worker.benchmarking.runner import EXIT_REFUSED, Line, sweep_batch_sizes
from testfleet.worker.executors.benchmark import RUNNER_MODULE


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.OutOfMemoryError."""


def line_for(size: int) -> BatchLine:
    throughput = 100.0 * size
    return BatchLine(
        batch_size=size,
        measurement=BatchSizeMeasurement(
            latency_ms=1000.0 * size / throughput,
            latency_p50_ms=10.0,
            latency_p90_ms=10.0,
            latency_p99_ms=10.0,
            throughput_items_per_second=throughput,
            memory_mb=1.0,
            iterations=1,
        ),
    )


@pytest.mark.parametrize(
    "exc",
    [
        OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"),
        MemoryError(),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB"),
    ],
)
def test_out_of_memory_stops_the_sweep_releases_memory_and_keeps_smaller_sizes(
    exc: BaseException,
) -> None:
    emitted: list[Line] = []
    released: list[int] = []

    def measure_one(size: int) -> BatchLine:
        if size >= 4:
            raise exc
        return line_for(size)

    config = BenchmarkConfig(model="gpt2", batch_sizes="auto", max_batch_size=64)
    result = sweep_batch_sizes(config, measure_one, lambda: released.append(1), emitted.append)

    assert result.stop_reason is StopReason.OUT_OF_MEMORY
    assert [line.batch_size for line in emitted if isinstance(line, BatchLine)] == [1, 2, 4]
    last = emitted[-1]
    assert isinstance(last, BatchLine)
    assert last.error is not None
    assert last.error.error_class is ErrorClass.OUT_OF_MEMORY
    assert released == [1]


def test_another_error_is_a_task_failure_and_releases_nothing() -> None:
    emitted: list[Line] = []
    released: list[int] = []

    def measure_one(size: int) -> BatchLine:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    config = BenchmarkConfig(model="gpt2", batch_sizes=[1, 2])
    result = sweep_batch_sizes(config, measure_one, lambda: released.append(1), emitted.append)
    assert result.stop_reason is StopReason.ERROR
    assert result.skipped == [2]
    (line,) = emitted
    assert isinstance(line, BatchLine)
    assert line.error is not None
    assert line.error.error_class is ErrorClass.TASK_FAILURE
    assert "shapes" in line.error.message
    assert released == []


def run_runner(stdin: bytes) -> tuple[int, list[bytes], str]:
    done = subprocess.run(
        [sys.executable, "-P", "-m", RUNNER_MODULE],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout.splitlines(), done.stderr.decode()


def test_an_unknown_model_is_refused_before_torch_is_imported() -> None:
    request = {"task_id": "t", "device": "cpu", "config": {"model": "bort"}}
    code, stdout, stderr = run_runner(json.dumps(request).encode())
    assert code == EXIT_REFUSED
    (raw,) = stdout  # stdout holds protocol lines and nothing else
    line = parse_line(raw)
    assert isinstance(line, FatalLine)
    assert line.error_class is ErrorClass.INVALID_CONFIG
    assert "bort" in line.message
    assert "refused" in stderr


def test_a_malformed_request_is_invalid_config() -> None:
    code, stdout, _ = run_runner(b'{"task_id": "t", "device": "cpu", "config": {}}')
    assert code == EXIT_REFUSED
    (raw,) = stdout
    line = parse_line(raw)
    assert isinstance(line, FatalLine)
    assert line.error_class is ErrorClass.INVALID_CONFIG
    assert "model" in line.message
