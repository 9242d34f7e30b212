"""BenchmarkExecutor with stand-in runners (small Python scripts, no torch): streaming,
deaths, cancels and timeouts of the process group, device choice, refusals before starting.

The real runner is exercised in test_bench_real.py. No test asserts on wall-clock speed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
from process_signals import all_exited

from testfleet.domain.benchmark import BatchSizeMeasurement, BenchmarkOutcome
from testfleet.domain.enums import ErrorClass, HardwareKind, ResultStatus, TaskType
from testfleet.domain.hardware import TorchInfo
from testfleet.domain.result import TaskResult, decode_logs
from testfleet.domain.task import TaskSpec
from testfleet.worker.benchmarking.protocol import BatchLine, SetupLine, encode_line
from testfleet.worker.executors.base import ExecutionContext
from testfleet.worker.executors.benchmark import BenchmarkExecutor
from testfleet.worker.executors.process_group import group_has_live_members
from testfleet.worker.executors.registry import default_executors

PY = sys.executable


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def context(tmp_path: Path) -> ExecutionContext:
    return ExecutionContext(
        worker_id="worker-test",
        attempt_id=7,
        attempt=1,
        cancel_event=asyncio.Event(),
        work_dir=tmp_path / "work",
    )


def bench_task(
    *, timeout: float = 60.0, hardware: list[str] | None = None, **config: Any
) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "task_id": "bench-1",
            "type": "benchmark",
            "timeout_seconds": timeout,
            "requirements": {"hardware": hardware or []},
            "config": {"model": "gpt2", **config},
        }
    )


def measurement(throughput: float) -> BatchSizeMeasurement:
    return BatchSizeMeasurement(
        latency_ms=1.0,
        latency_p50_ms=1.0,
        latency_p90_ms=1.0,
        latency_p99_ms=1.0,
        throughput_items_per_second=throughput,
        memory_mb=50.0,
        iterations=3,
    )


SETUP = SetupLine(
    model_source="config",
    device="cpu",
    device_name="Stand-in CPU",
    planned_batch_sizes=[1, 2, 4, 8],
)


def stand_in(body: str, lines: Sequence[Any] = ()) -> list[str]:
    """A runner that reads its request, writes ``lines`` to stdout, then runs ``body``."""
    payload = b"".join(encode_line(line) for line in lines).decode()
    script = textwrap.dedent(
        """
        import json, os, signal, subprocess, sys, time
        request = json.loads(sys.stdin.read())
        sys.stderr.write("stand-in runner: " + request["task_id"] + "\\n")
        sys.stdout.write({payload!r})
        sys.stdout.flush()
        """
    ).format(payload=payload)
    return [PY, "-c", script + textwrap.dedent(body)]


def executor(command: list[str], **kwargs: Any) -> BenchmarkExecutor:
    return BenchmarkExecutor(kill_grace_seconds=0.5, runner_command=command, **kwargs)


def outcome_of(result: TaskResult) -> BenchmarkOutcome:
    return BenchmarkOutcome.model_validate(result.results)


async def test_lines_stream_in_and_a_sigkill_marks_the_next_size_out_of_memory(
    context: ExecutionContext,
) -> None:
    seen: list[str] = []
    command = stand_in(
        "os.kill(os.getpid(), signal.SIGKILL)",
        [
            SETUP,
            BatchLine(batch_size=1, measurement=measurement(100.0)),
            BatchLine(batch_size=2, measurement=measurement(150.0)),
        ],
    )
    run = executor(command, on_line=lambda line: seen.append(line.type))
    result = await run.run(bench_task(batch_sizes="auto", max_batch_size=8), context)

    assert seen == ["setup", "batch", "batch"]
    assert result.status is ResultStatus.COMPLETED
    assert result.simulation_status.is_simulated is False
    outcome = outcome_of(result)
    assert set(outcome.batch_sizes) == {"1", "2"}
    assert outcome.errors["4"].error_class is ErrorClass.OUT_OF_MEMORY
    assert "killed by SIGKILL" in outcome.errors["4"].message
    assert outcome.optimal_batch_size == 2
    assert outcome.hardware is HardwareKind.CPU
    assert outcome.device_name == "Stand-in CPU"
    assert "stand-in runner: bench-1" in decode_logs(result.logs)


async def test_the_runner_gets_the_request_and_an_offline_environment(
    context: ExecutionContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the child is offline whatever the worker says
    body = """
        setup = {"type": "setup", "model_source": "config", "device": request["device"],
                 "device_name": "x", "planned_batch_sizes": [1],
                 "conditions": {"request": request, "offline": os.environ["HF_HUB_OFFLINE"],
                                "task": os.environ["TESTFLEET_TASK_ID"], "cwd": os.getcwd()}}
        batch = {"type": "batch", "batch_size": 1, "measurement": {
            "latency_ms": 1, "latency_p50_ms": 1, "latency_p90_ms": 1, "latency_p99_ms": 1,
            "throughput_items_per_second": 1, "memory_mb": 1, "iterations": 1}}
        print(json.dumps(setup)); print(json.dumps(batch))
        print(json.dumps({"type": "final", "stop_reason": "completed"}))
    """
    result = await executor(stand_in(body)).run(
        bench_task(batch_sizes=[1], precision="bf16", hardware=["cpu"]), context
    )
    assert result.status is ResultStatus.COMPLETED, result.error
    conditions = outcome_of(result).conditions
    assert conditions["offline"] == "1"
    assert conditions["task"] == "bench-1"
    assert Path(conditions["cwd"]) == context.work_dir
    request = conditions["request"]
    assert request["device"] == "cpu"
    assert request["config"]["precision"] == "bf16"
    assert request["task_id"] == "bench-1"


async def test_a_fatal_line_fails_with_its_class(context: ExecutionContext) -> None:
    body = """
        print(json.dumps({"type": "fatal", "error_class": "infrastructure",
                          "message": "cuda requested but torch.cuda.is_available() is False"}))
        sys.exit(2)
    """
    result = await executor(stand_in(body)).run(
        bench_task(device="cuda", hardware=["cuda"]), context
    )
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INFRASTRUCTURE
    assert "is_available" in result.error.message
    assert result.results == {}
    assert result.simulation_status.is_simulated is False


async def test_junk_on_stdout_and_a_crash_is_an_infrastructure_failure(
    context: ExecutionContext,
) -> None:
    body = """
        print("not a protocol line")
        sys.stdout.write("x" * 3_000_000 + "\\n")
        sys.stderr.write("Traceback: something broke\\n")
        sys.exit(1)
    """
    result = await executor(stand_in(body, [SETUP])).run(bench_task(), context)
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INFRASTRUCTURE
    assert "code 1" in result.error.message
    assert "something broke" in decode_logs(result.logs)
    assert outcome_of(result).errors["1"].error_class is ErrorClass.INFRASTRUCTURE


#: This process's children when the current test started: another test of the
#: same session may leave one (a browser's driver, a helper reaped late), and
#: only the runner a test started is that test's business.
_EARLIER_CHILDREN: set[int] = set()


@pytest.fixture(autouse=True)
def _earlier_children() -> None:
    _EARLIER_CHILDREN.clear()
    _EARLIER_CHILDREN.update(child.pid for child in psutil.Process().children(recursive=False))


def runner_pids() -> list[int]:
    me = psutil.Process()
    return [
        child.pid
        for child in me.children(recursive=False)
        if child.pid not in _EARLIER_CHILDREN and child.status() != psutil.STATUS_ZOMBIE
    ]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# Leaves a grandchild in the group, then works "forever".
HANG = """
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(120)
"""


async def test_cancel_mid_run_ends_the_whole_process_group(context: ExecutionContext) -> None:
    pids: list[int] = []

    def on_line(line: Any) -> None:
        if line.type == "batch":
            pids.extend(runner_pids())
            context.cancel_event.set()

    command = stand_in(HANG, [SETUP, BatchLine(batch_size=1, measurement=measurement(10.0))])
    result = await executor(command, on_line=on_line).run(bench_task(), context)

    assert result.status is ResultStatus.CANCELLED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.CANCELLED
    assert set(outcome_of(result).batch_sizes) == {"1"}  # kept
    (pid,) = pids
    assert gone(pid)
    assert not group_has_live_members(pid)


async def test_timeout_ends_the_whole_process_group(context: ExecutionContext) -> None:
    pids: list[int] = []
    command = stand_in(HANG, [SETUP])
    run = executor(command, on_line=lambda line: pids.extend(runner_pids()))
    result = await run.run(bench_task(timeout=1.5), context)

    assert result.status is ResultStatus.TIMED_OUT
    assert result.error is not None
    assert result.error.error_class is ErrorClass.TIMEOUT
    assert outcome_of(result).conditions["stop_reason"] == "timed_out"
    (pid,) = pids
    assert gone(pid)
    assert not group_has_live_members(pid)


NEVER = ["/nonexistent/never-started"]


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"model": "bort"}, "unknown model 'bort'"),
        ({"batch_sizes": []}, "batch_sizes"),
        ({"device": "openvino"}, "no openvino backend"),
    ],
)
async def test_refusals_happen_before_anything_starts(
    context: ExecutionContext, config: dict[str, Any], fragment: str
) -> None:
    task = TaskSpec.model_construct(  # bypass submit-time validation: the worker checks again
        task_id="bench-1",
        type=TaskType.BENCHMARK,
        config={"model": "gpt2", **config},
        timeout_seconds=60.0,
        requirements=bench_task().requirements,
    )
    result = await executor(NEVER).run(task, context)
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert fragment in result.error.message
    assert result.simulation_status.is_simulated is False


async def test_unknown_model_lists_the_known_ones(context: ExecutionContext) -> None:
    result = await executor(NEVER).run(bench_task(model="bort"), context)
    assert result.error is not None
    assert "bert-base-uncased" in result.error.message
    assert "whisper-tiny" in result.error.message


async def test_cancelled_before_the_start(context: ExecutionContext) -> None:
    context.cancel_event.set()
    result = await executor(NEVER).run(bench_task(), context)
    assert result.status is ResultStatus.CANCELLED


async def test_a_runner_that_cannot_start_is_an_infrastructure_failure(
    context: ExecutionContext,
) -> None:
    result = await executor(NEVER).run(bench_task(), context)
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INFRASTRUCTURE


ECHO_DEVICE = """
    fatal = {"type": "fatal", "error_class": "task_failure", "message": request["device"]}
    print(json.dumps(fatal))
"""


@pytest.mark.parametrize(
    ("hardware", "torch", "device", "probes"),
    [
        ([], None, "cpu", 0),
        (["cuda"], None, "cuda", 0),  # one kind: no probe, the runner checks
        (["rocm", "cuda"], TorchInfo(version="2", cuda_available=True), "cuda", 1),
        (["cuda", "cpu"], TorchInfo(version="2"), "cpu", 1),
    ],
)
async def test_the_device_follows_the_requirements_and_the_torch_probe(
    context: ExecutionContext,
    hardware: list[str],
    torch: TorchInfo | None,
    device: str,
    probes: int,
) -> None:
    calls: list[int] = []

    def probe() -> TorchInfo | None:
        calls.append(1)
        return torch

    run = executor(stand_in(ECHO_DEVICE), torch_info=probe)
    for _ in range(2):  # the probe's answer is kept
        result = await run.run(bench_task(hardware=hardware), context)
        assert result.error is not None
        assert result.error.message == device
    assert len(calls) == probes


def test_default_executors_offer_benchmarks_only_with_torch_and_transformers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert isinstance(default_executors()[TaskType.BENCHMARK], BenchmarkExecutor)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: None if name == "transformers" else real_find_spec(name),
    )
    assert TaskType.BENCHMARK not in default_executors()
    # pytest is installed here, so the test executor stays.
    assert set(default_executors()) == {TaskType.COMMAND, TaskType.SIMULATED, TaskType.TEST}


# Ignores SIGTERM, leaves a grandchild in the group and one outside it (setsid),
# writes their pids to stderr, then works "forever".
STUBBORN = """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    outside = subprocess.Popen(["setsid", "sleep", "120"])
    sys.stderr.write(f"PIDS {os.getpid()} {inside.pid} {outside.pid}\\n")
    sys.stderr.flush()
    time.sleep(120)
"""


@pytest.mark.parametrize("ending", ["cancel", "timeout"])
async def test_a_runner_that_ignores_sigterm_is_killed_with_everything_it_started(
    context: ExecutionContext, ending: str
) -> None:
    # Issue 12: SIGKILL after the grace, also for what left the process group.
    pids: list[int] = []

    def on_output(data: bytes) -> None:
        for line in data.decode().splitlines():
            if line.startswith("PIDS "):
                pids.extend(int(p) for p in line.split()[1:])
                if ending == "cancel":
                    context.cancel_event.set()

    context.report_output = on_output
    timeout = 60.0 if ending == "cancel" else 3.0
    result = await executor(stand_in(STUBBORN, [SETUP])).run(bench_task(timeout=timeout), context)

    expected = ResultStatus.CANCELLED if ending == "cancel" else ResultStatus.TIMED_OUT
    assert result.status is expected
    assert len(pids) == 3
    assert await all_exited(pids)
