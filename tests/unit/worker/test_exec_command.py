"""CommandExecutor with real child processes: outcomes, output tail, env/cwd, process-group kills.

Durations here are short and no test asserts on wall-clock speed; timeouts only
check how the attempt ended and that every process of the group is gone. A test
learns that a child started something from a line the child writes to a FIFO,
and that a process ended from its pidfd (``process_signals``), never by
sleeping and looking again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from process_signals import Fifo, all_exited, exited

from testfleet.clock import SystemClock
from testfleet.domain.enums import ErrorClass, ResultStatus, TaskType
from testfleet.domain.result import TaskResult, decode_logs
from testfleet.domain.task import TaskSpec
from testfleet.worker.executors.base import ExecutionContext
from testfleet.worker.executors.command import (
    RESULT_TAIL_BYTES,
    CommandExecutor,
    _decode_tail,
    _MemoryPeak,
)
from testfleet.worker.executors.process_group import OutputTail
from testfleet.worker.executors.registry import benchmarks_available, default_executors
from testfleet.worker.executors.task_processes import attempt_mark, find_marked
from testfleet.worker.log_stream import LogStream

PY = sys.executable


def command_task(argv: list[str], *, timeout: float = 60.0, **config: Any) -> TaskSpec:
    return TaskSpec(
        task_id="cmd-1",
        type=TaskType.COMMAND,
        timeout_seconds=timeout,
        config={"argv": argv, **config},
    )


@pytest.fixture
def context(tmp_path: Path) -> ExecutionContext:
    return ExecutionContext(
        worker_id="worker-test",
        attempt_id=42,
        attempt=1,
        cancel_event=asyncio.Event(),
        work_dir=tmp_path / "work",
    )


@pytest.fixture
def executor() -> CommandExecutor:
    # A short grace keeps the escalation tests quick; sampling often enough to see a short task.
    return CommandExecutor(kill_grace_seconds=0.5, memory_sample_interval_seconds=0.05)


def same_directory(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def assert_real(result: TaskResult) -> None:
    assert result.simulation_status.is_simulated is False
    assert result.worker_id == "worker-test"
    assert result.task_id == "cmd-1"
    assert result.execution_time_seconds >= 0


# --------------------------------------------------------------------------- outcomes


async def test_success_reports_output_tail_and_logs(
    executor: CommandExecutor, context: ExecutionContext
) -> None:
    script = "import sys; print('hello stdout'); print('hello stderr', file=sys.stderr)"
    result = await executor.run(command_task([PY, "-c", script]), context)

    assert_real(result)
    assert result.status is ResultStatus.COMPLETED
    assert result.error is None
    assert result.results["exit_code"] == 0
    assert result.results["timed_out"] is False
    assert "hello stdout" in result.results["output_tail"]
    assert "hello stderr" in result.results["output_tail"]
    assert decode_logs(result.logs) == result.results["output_tail"]


async def test_non_zero_exit_is_a_task_failure(
    executor: CommandExecutor, context: ExecutionContext
) -> None:
    result = await executor.run(
        command_task([PY, "-c", "print('bad'); raise SystemExit(3)"]), context
    )

    assert_real(result)
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.TASK_FAILURE
    assert result.error.message == "exit code 3"
    assert result.results["exit_code"] == 3
    assert "bad" in result.results["output_tail"]


async def test_death_by_signal_names_the_signal(
    executor: CommandExecutor, context: ExecutionContext
) -> None:
    script = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    result = await executor.run(command_task([PY, "-c", script]), context)

    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.TASK_FAILURE
    assert result.error.message == "killed by SIGTERM"
    assert result.results["exit_code"] == -signal.SIGTERM


async def test_output_beyond_the_tail_limit_keeps_only_the_end(
    executor: CommandExecutor, context: ExecutionContext
) -> None:
    script = "import sys; sys.stdout.write('x' * 300_000 + 'THE END'); sys.stdout.flush()"
    result = await executor.run(command_task([PY, "-c", script], output_tail_bytes=1000), context)

    assert result.status is ResultStatus.COMPLETED
    logs = decode_logs(result.logs)
    assert len(logs) == 1000
    assert logs.endswith("THE END")
    assert result.results["output_tail"] == logs
    assert result.results["output_bytes"] == 300_007


async def test_result_tail_is_the_last_4_kib(
    executor: CommandExecutor, context: ExecutionContext
) -> None:
    script = "import sys; sys.stdout.write('y' * 100_000 + 'LAST'); sys.stdout.flush()"
    result = await executor.run(command_task([PY, "-c", script]), context)

    assert len(result.results["output_tail"]) == RESULT_TAIL_BYTES
    assert result.results["output_tail"].endswith("LAST")
    assert len(decode_logs(result.logs)) == 65536  # logs keep the default 64 KiB tail


async def test_zero_tail_keeps_nothing_but_counts(
    executor: CommandExecutor, context: ExecutionContext
) -> None:
    result = await executor.run(
        command_task([PY, "-c", "print('z' * 999)"], output_tail_bytes=0), context
    )
    assert result.status is ResultStatus.COMPLETED
    assert result.logs == ""
    assert result.results["output_tail"] == ""
    assert result.results["output_bytes"] == 1000


async def test_env_and_cwd_reach_the_program(
    executor: CommandExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    script = (
        "import os; print(os.getcwd()); print(os.environ['TF_TEST_VALUE']);"
        "print(os.environ['TESTFLEET_TASK_ID'], os.environ['TESTFLEET_ATTEMPT_ID']);"
        "print('PATH' in os.environ)"
    )
    result = await executor.run(
        command_task([PY, "-c", script], env={"TF_TEST_VALUE": "from-config"}, cwd=str(cwd)),
        context,
    )

    lines = result.results["output_tail"].splitlines()
    assert result.status is ResultStatus.COMPLETED
    assert same_directory(lines[0], cwd)
    assert lines[1] == "from-config"
    assert lines[2] == "cmd-1 42"
    assert lines[3] == "True"  # the worker's environment is inherited, config.env added


async def test_without_cwd_the_program_runs_in_the_work_dir(
    executor: CommandExecutor, context: ExecutionContext
) -> None:
    result = await executor.run(command_task([PY, "-c", "import os; print(os.getcwd())"]), context)

    assert result.status is ResultStatus.COMPLETED
    assert same_directory(result.results["output_tail"].strip(), context.work_dir)


# --------------------------------------------------------------------------- bad configs


async def test_missing_program_is_invalid_config(
    executor: CommandExecutor, context: ExecutionContext
) -> None:
    result = await executor.run(command_task(["testfleet-no-such-program-xyz", "--flag"]), context)

    assert_real(result)
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert "program not found" in result.error.message
    assert "testfleet-no-such-program-xyz" in result.error.message


async def test_missing_program_path_is_invalid_config(
    executor: CommandExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nope" / "run.sh")
    result = await executor.run(command_task([missing]), context)

    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert result.error.message == f"program not found: {missing}"


async def test_missing_interpreter_is_named_as_such(
    executor: CommandExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/nonexistent/interpreter\necho hi\n")
    script.chmod(0o755)
    result = await executor.run(command_task([str(script)]), context)

    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert "interpreter" in result.error.message
    assert str(script) in result.error.message


async def test_nul_byte_in_argv_is_invalid_config(
    executor: CommandExecutor, context: ExecutionContext
) -> None:
    result = await executor.run(command_task([PY, "-c", "print(1)\x00"]), context)

    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert "null byte" in result.error.message


async def test_program_that_is_not_executable_is_invalid_config(
    executor: CommandExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    if os.access(script, os.X_OK):  # root may execute anything with an x bit... not this one
        pytest.skip("this user can execute a file without an execute bit")
    result = await executor.run(command_task([str(script)]), context)

    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert "not executable" in result.error.message


async def test_missing_cwd_is_invalid_config(
    executor: CommandExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no" / "such" / "dir")
    result = await executor.run(command_task([PY, "-c", "pass"], cwd=missing), context)

    assert_real(result)
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert result.error.message == f"working directory does not exist: {missing}"


async def test_config_that_bypassed_validation_is_invalid_config(
    executor: CommandExecutor, context: ExecutionContext
) -> None:
    task = TaskSpec.model_construct(
        task_id="cmd-1", type=TaskType.COMMAND, config={"argv": []}, timeout_seconds=5.0
    )
    result = await executor.run(task, context)

    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert "argv" in result.error.message


# --------------------------------------------------------------------------- timeout and cancel


async def test_timeout_kills_the_whole_process_group(
    executor: CommandExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    argv = ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"]
    result = await executor.run(command_task(argv, timeout=1.0), context)

    assert_real(result)
    assert result.status is ResultStatus.TIMED_OUT
    assert result.error is not None
    assert result.error.error_class is ErrorClass.TIMEOUT
    assert result.results["timed_out"] is True
    grandchild = int(pid_file.read_text())
    assert await exited(grandchild)


async def test_a_group_that_ignores_sigterm_gets_sigkill(
    executor: CommandExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    # An ignored signal stays ignored across fork and exec: sleep ignores TERM too.
    argv = ["sh", "-c", f"trap '' TERM; sleep 60 & echo $! > {pid_file}; wait"]
    result = await executor.run(command_task(argv, timeout=1.0), context)

    assert result.status is ResultStatus.TIMED_OUT
    assert result.results["exit_code"] == -signal.SIGKILL
    assert await exited(int(pid_file.read_text()))


async def test_cancel_stops_the_command(
    executor: CommandExecutor, context: ExecutionContext, fifo: Callable[[str], Fifo]
) -> None:
    pid_file = fifo("grandchild.pid")
    argv = ["sh", "-c", f"sleep 60 & echo $! > {pid_file.path}; wait"]
    running = asyncio.create_task(executor.run(command_task(argv), context))
    [grandchild] = map(int, await pid_file.read_lines(1))
    context.cancel_event.set()
    result = await running

    assert_real(result)
    assert result.status is ResultStatus.CANCELLED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.CANCELLED
    assert result.results["timed_out"] is False
    assert await exited(grandchild)


async def test_cancelled_before_start_runs_nothing(
    executor: CommandExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    context.cancel_event.set()
    result = await executor.run(command_task(["touch", str(marker)]), context)

    assert result.status is ResultStatus.CANCELLED
    assert not marker.exists()


async def test_processes_left_behind_after_exit_are_ended(
    executor: CommandExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    pid_file = tmp_path / "leftover.pid"
    # The background sleep also holds the output pipe open: the result must not wait for it.
    argv = ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo done"]
    result = await executor.run(command_task(argv), context)

    assert result.status is ResultStatus.COMPLETED
    assert "done" in result.results["output_tail"]
    assert await exited(int(pid_file.read_text()))


async def test_agent_cancelling_the_run_kills_the_group_and_propagates(
    executor: CommandExecutor, context: ExecutionContext, fifo: Callable[[str], Fifo]
) -> None:
    pid_file = fifo("grandchild.pid")
    argv = ["sh", "-c", f"sleep 60 & echo $! > {pid_file.path}; wait"]
    running = asyncio.create_task(executor.run(command_task(argv), context))
    [grandchild] = map(int, await pid_file.read_lines(1))
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await exited(grandchild)


# --------------------------------------------------------------------------- metrics and helpers


async def test_peak_memory_is_sampled_for_a_task_that_runs_a_while(
    executor: CommandExecutor,
    context: ExecutionContext,
    fifo: Callable[[str], Fifo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The child holds 64 MiB until a sample has seen them (the FIFO says so),
    # not for a time the sampler may or may not get a turn in; the minute is
    # a guard against a hang.
    seen = fifo("sampled")
    sample = _MemoryPeak.sample
    told: list[int] = []

    def sample_and_tell(memory: _MemoryPeak, pid: int) -> bool:
        alive = sample(memory, pid)
        if memory.peak_bytes >= 64 * 1024**2 and not told:
            told.append(memory.samples)
            seen.write("sampled\n")
        return alive

    monkeypatch.setattr(_MemoryPeak, "sample", sample_and_tell)
    script = (
        "import os, select; block = bytearray(64 * 1024 * 1024);"
        f" fd = os.open({str(seen.path)!r}, os.O_RDONLY | os.O_NONBLOCK);"
        " select.select([fd], [], [], 60)"
    )
    result = await executor.run(command_task([PY, "-c", script]), context)

    assert result.status is ResultStatus.COMPLETED
    assert result.hardware_metrics["peak_rss_mb"] >= 64
    assert result.hardware_metrics["rss_sample_interval_seconds"] == 0.05


async def test_memory_sampling_can_be_turned_off(context: ExecutionContext) -> None:
    executor = CommandExecutor(memory_sample_interval_seconds=None)
    result = await executor.run(command_task([PY, "-c", "import time; time.sleep(0.2)"]), context)
    assert result.hardware_metrics == {}


async def test_tail_protocol_keeps_the_end_in_bounded_memory() -> None:
    tail = OutputTail(limit=5000)
    sent = b""
    for i in range(2000):
        chunk = bytes([65 + i % 26]) * (1 + (i * 37) % 900)
        tail.data_received(chunk)
        sent += chunk
        assert tail._kept <= 5000 + 900  # the limit plus at most one chunk
    assert tail.tail() == sent[-5000:]
    assert tail.total == len(sent)


def test_decode_tail_drops_a_cut_utf8_sequence() -> None:
    raw = "héllo wörld €".encode()
    cut = raw[raw.index("€".encode()) + 1 :]  # starts inside the euro sign
    assert _decode_tail(b"ok " + raw) == "ok héllo wörld €"
    assert _decode_tail(cut) == ""
    assert _decode_tail(raw[2:]) == "llo wörld €"  # "é" cut in half: its tail byte dropped


def test_default_executors_cover_command_simulated_test_and_benchmark_when_installed() -> None:
    executors = default_executors()
    # pytest is a dependency of testfleet, so the test executor is always here.
    expected = {TaskType.COMMAND, TaskType.SIMULATED, TaskType.TEST}
    if benchmarks_available():
        expected.add(TaskType.BENCHMARK)
    assert set(executors) == expected
    for task_type, executor in executors.items():
        assert executor.task_type is task_type


# --------------------------------------------------------------------------- issue 12


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_an_output_flood_keeps_a_bounded_tail_and_says_how_much_was_dropped(
    executor: CommandExecutor, context: ExecutionContext
) -> None:
    # 200 MB as fast as the pipe takes it, through the live log stream as in the agent.
    stream = LogStream(context.attempt_id, lambda message: None, SystemClock())
    context.report_output = stream.write
    script = (
        "import sys\nblock = b'x' * 1_000_000\n"
        "for _ in range(200): sys.stdout.buffer.write(block)\n"
        "sys.stdout.buffer.write(b'THE END')"
    )
    before = _rss_kib()
    result = await executor.run(command_task([PY, "-c", script], output_tail_bytes=65536), context)
    stream.close()
    grown_kib = _rss_kib() - before

    assert result.status is ResultStatus.COMPLETED
    total = 200_000_007
    assert result.results["output_bytes"] == total
    assert result.results["output_dropped_bytes"] == total - 65536
    logs = decode_logs(result.logs)
    assert len(logs) == 65536
    assert logs.endswith("THE END")
    assert grown_kib < 64 * 1024, f"the worker grew by {grown_kib} KiB reading 200 MB"


def escaping_script(pid_file: Path, then: str) -> list[str]:
    """A command that starts a ``setsid`` child and a double-forked one (both
    leave its process group), writes their pids to ``pid_file``, then ``then``."""
    return [
        "sh",
        "-c",
        f"setsid sleep 600 & a=$!; "
        f"{PY} -c 'import os,time\nif os.fork()==0:\n os.setsid()\n print(os.getpid(),flush=True)\n"
        f" time.sleep(600)' > {pid_file}.b & "
        f"while [ ! -s {pid_file}.b ]; do sleep 0.01; done; "
        f"echo $a $(cat {pid_file}.b) > {pid_file}; {then}",
    ]


async def test_processes_that_left_the_group_end_with_the_attempt(
    executor: CommandExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    pid_file = tmp_path / "escaped.pids"
    result = await executor.run(command_task(escaping_script(pid_file, "echo done")), context)

    assert result.status is ResultStatus.COMPLETED
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    assert await all_exited(pids)
    assert find_marked(attempt_mark(context.attempt_id)) == []


async def test_a_cancel_ends_processes_that_left_the_group_even_if_they_ignore_sigterm(
    executor: CommandExecutor, context: ExecutionContext, fifo: Callable[[str], Fifo]
) -> None:
    ready = fifo("ready")
    pid_file = ready.path.parent / "escaped.pids"
    # An ignored signal stays ignored across fork and exec: every sleeper ignores TERM.
    argv = escaping_script(pid_file, f"echo ready > {ready.path}; sleep 600")
    argv[2] = "trap '' TERM; " + argv[2]
    running = asyncio.create_task(executor.run(command_task(argv), context))
    await ready.read_lines(1)
    pids = [int(p) for p in pid_file.read_text().split()]
    context.cancel_event.set()
    result = await running

    assert result.status is ResultStatus.CANCELLED
    assert result.results["exit_code"] == -signal.SIGKILL  # TERM ignored: killed after the grace
    assert await all_exited(pids)
