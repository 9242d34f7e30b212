"""PytestExecutor with real session children: results, streaming, crashes, kills, bad input.

Each test writes a tiny pytest project into tmp_path and runs ``test`` tasks
on it. Timeouts and cancels wait on process exits, never on how fast this
machine is; the bounds are generous.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from process_signals import Fifo, all_exited

from testfleet.domain.enums import ErrorClass, ResultStatus, TaskType
from testfleet.domain.pytest_tasks import TestChunkOutcome, TestOutcome, TestRecord
from testfleet.domain.result import TaskResult, decode_logs
from testfleet.domain.task import TaskSpec
from testfleet.worker.executors.base import ExecutionContext
from testfleet.worker.executors.pytest_run import PytestExecutor
from testfleet.worker.executors.registry import default_executors
from testfleet.worker.pytest_sessions.sessions import SessionPool

SIMPLE = """
def test_one():
    print("one ran")

def test_two():
    assert 2 + 2 == 5

def test_three():
    pass
"""


def write_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


def make_task(
    project: Path | None,
    node_ids: list[str],
    *,
    timeout: float = 120.0,
    task_id: str = "test-1",
    source: dict[str, str] | None = None,
    **config: Any,
) -> TaskSpec:
    """A ``test`` task on ``project`` (a path here), or on ``source`` (repo + commit)."""
    if source is None:
        assert project is not None
        source = {"path": str(project)}
    return TaskSpec(
        task_id=task_id,
        type=TaskType.TEST,
        timeout_seconds=timeout,
        config={"run_id": "run-1", "project": source, "node_ids": node_ids, **config},
    )


@pytest.fixture
def context(tmp_path: Path) -> ExecutionContext:
    return ExecutionContext(
        worker_id="worker-test",
        attempt_id=7,
        attempt=1,
        cancel_event=asyncio.Event(),
        work_dir=tmp_path / "work",
    )


@pytest.fixture
async def executor() -> AsyncIterator[PytestExecutor]:
    executor = PytestExecutor(pool=SessionPool(kill_grace_seconds=0.5, keep_zygotes=False))
    yield executor
    await executor.close()
    assert executor.pool.live_sessions() == []


def outcome_of(result: TaskResult) -> TestChunkOutcome:
    outcome = TestChunkOutcome.model_validate(result.results)
    for record in outcome.tests:
        TestRecord.model_validate(record.model_dump(mode="json"))
    return outcome


def verdicts(outcome: TestChunkOutcome) -> dict[str, TestOutcome]:
    return {record.nodeid.split("::")[-1]: record.outcome for record in outcome.tests}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except ValueError:  # half written
        return []


def sleeper_project(root: Path, pid_file: Path) -> Path:
    """A test that records its pid and a grandchild's (two lines, to a file or a
    :class:`Fifo`), then sleeps a minute: its workload, which a timeout or a
    cancel must cut short."""
    return write_project(
        root,
        {
            "test_slow.py": f"""
                import os, subprocess, sys, time

                def test_quick():
                    pass

                def test_sleeps():
                    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
                    with open({str(pid_file)!r}, "w") as f:
                        f.write(f"{{os.getpid()}}\\n{{child.pid}}\\n")
                    time.sleep(60)

                def test_after():
                    pass
            """
        },
    )


def commit_all(root: Path) -> str:
    """Make ``root`` a git repository with one commit of everything; its hash."""
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "tests"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    done = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return done.stdout.strip()


# --------------------------------------------------------------------------- results


async def test_a_chunk_completes_with_a_record_per_test_whatever_the_outcomes(
    executor: PytestExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "proj", {"test_simple.py": SIMPLE})
    ids = ["test_simple.py::test_one", "test_simple.py::test_two", "test_simple.py::test_three"]
    result = await executor.run(make_task(project, ids), context)

    assert result.status is ResultStatus.COMPLETED, result.error
    assert result.error is None
    assert result.simulation_status.is_simulated is False
    assert result.task_id == "test-1"
    assert result.worker_id == "worker-test"
    outcome = outcome_of(result)
    assert [record.nodeid for record in outcome.tests] == ids
    assert verdicts(outcome) == {
        "test_one": TestOutcome.PASSED,
        "test_two": TestOutcome.FAILED,
        "test_three": TestOutcome.PASSED,
    }
    assert outcome.run_id == "run-1"
    assert outcome.not_run == []
    assert outcome.already_reported == []
    session = outcome.session
    assert session.reused is False
    assert session.collected == 3
    assert session.collect_seconds > 0
    assert session.pytest_version == pytest.__version__
    assert session.python == sys.executable
    assert session.restarts == 0
    assert "test_simple.py" in decode_logs(result.logs)  # pytest's own terminal output


async def test_a_second_chunk_of_the_run_reuses_the_collected_session(
    executor: PytestExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    collections = tmp_path / "collections"
    project = write_project(
        tmp_path / "proj",
        {
            "conftest.py": f"""
                def pytest_collection_finish(session):
                    with open({str(collections)!r}, "a") as f:
                        f.write("collected\\n")
            """,
            "test_simple.py": SIMPLE,
        },
    )
    first = await executor.run(make_task(project, ["test_simple.py::test_one"]), context)
    second = await executor.run(
        make_task(project, ["test_simple.py::test_three"], task_id="test-2"), context
    )
    assert outcome_of(first).session.reused is False
    info = outcome_of(second).session
    assert info.reused is True
    assert info.collect_seconds == 0
    assert info.collected == 3
    assert verdicts(outcome_of(second)) == {"test_three": TestOutcome.PASSED}
    assert collections.read_text() == "collected\n"
    assert len(executor.pool.idle_sessions()) == 1


async def test_a_warm_up_task_starts_the_runs_session_for_its_first_chunk(
    executor: PytestExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "proj", {"test_simple.py": SIMPLE})
    warm = await executor.run(make_task(project, [], task_id="run-1.warm.0000"), context)
    assert warm.status is ResultStatus.COMPLETED
    assert outcome_of(warm).tests == []
    assert outcome_of(warm).session.reused is False
    assert len(executor.pool.idle_sessions()) == 1
    chunk = await executor.run(make_task(project, ["test_simple.py::test_three"]), context)
    assert outcome_of(chunk).session.reused is True
    assert verdicts(outcome_of(chunk)) == {"test_three": TestOutcome.PASSED}


async def test_tests_an_earlier_attempt_reported_are_not_run_again(
    executor: PytestExecutor, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "proj", {"test_simple.py": SIMPLE})
    ids = ["test_simple.py::test_one", "test_simple.py::test_two", "test_simple.py::test_three"]
    context = ExecutionContext(
        worker_id="worker-test",
        attempt_id=8,
        attempt=2,
        cancel_event=asyncio.Event(),
        work_dir=tmp_path / "work",
        completed_tests=frozenset({ids[0], ids[1]}),
    )
    result = await executor.run(make_task(project, ids), context)
    assert result.status is ResultStatus.COMPLETED
    outcome = outcome_of(result)
    assert [record.nodeid for record in outcome.tests] == [ids[2]]
    assert outcome.already_reported == ids[:2]

    # Everything reported already: done at once, nothing started.
    everything = ExecutionContext(
        worker_id="worker-test",
        attempt_id=9,
        attempt=3,
        cancel_event=asyncio.Event(),
        work_dir=tmp_path / "work",
        completed_tests=frozenset(ids),
    )
    live = len(executor.pool.live_sessions())
    result = await executor.run(make_task(project, ids), everything)
    assert result.status is ResultStatus.COMPLETED
    assert outcome_of(result).already_reported == ids
    assert outcome_of(result).tests == []
    assert len(executor.pool.live_sessions()) == live


async def test_records_are_streamed_while_the_chunk_runs(
    executor: PytestExecutor,
    context: ExecutionContext,
    tmp_path: Path,
    fifo: Callable[[str], Fifo],
) -> None:
    flag = fifo("first-record-arrived")
    project = write_project(
        tmp_path / "proj",
        {
            "test_stream.py": f"""
                import os, select

                def test_first():
                    pass

                def test_second():
                    # Passes only if the worker handed test_first's record on
                    # before this test finished: the listener writes to the
                    # FIFO then, and this waits for that (the minute is a guard).
                    fd = os.open({str(flag.path)!r}, os.O_RDONLY | os.O_NONBLOCK)
                    readable, _, _ = select.select([fd], [], [], 60)
                    assert readable, "test_first's record was not streamed"
                    assert os.read(fd, 16) == b"yes\\n"
            """
        },
    )
    batches: list[list[str]] = []

    def listener(records: list[TestRecord]) -> None:
        batches.append([record.nodeid for record in records])
        if any(record.nodeid.endswith("test_first") for record in records):
            flag.write("yes\n")

    context.report_tests = listener
    ids = ["test_stream.py::test_first", "test_stream.py::test_second"]
    result = await executor.run(make_task(project, ids), context)
    assert result.status is ResultStatus.COMPLETED
    assert verdicts(outcome_of(result)) == {
        "test_first": TestOutcome.PASSED,
        "test_second": TestOutcome.PASSED,
    }
    assert [nodeid for batch in batches for nodeid in batch] == ids


# --------------------------------------------------------------------------- crashes


async def test_a_crash_gives_a_crashed_record_and_the_rest_still_runs(
    executor: PytestExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    project = write_project(
        tmp_path / "proj",
        {
            "test_crash.py": """
                import os

                def test_before():
                    pass

                def test_dies():
                    os._exit(3)

                def test_after():
                    pass
            """
        },
    )
    streamed: list[TestRecord] = []
    context.report_tests = streamed.extend
    ids = ["test_crash.py::test_before", "test_crash.py::test_dies", "test_crash.py::test_after"]
    result = await executor.run(make_task(project, ids), context)

    assert result.status is ResultStatus.COMPLETED, result.error
    outcome = outcome_of(result)
    assert [record.nodeid for record in outcome.tests] == ids
    crashed = outcome.tests[1]
    assert crashed.crashed is True
    assert crashed.outcome is TestOutcome.FAILED
    assert [phase.when.value for phase in crashed.phases] == ["setup", "call"]
    text = crashed.failure_text
    assert "pytest process on worker worker-test died while running this test" in text
    assert "exit code 3" in text
    assert "test_crash.py" in text  # the last lines of the session's output
    assert crashed.location.domain == "test_dies"
    assert [r.crashed for r in (outcome.tests[0], outcome.tests[2])] == [False, False]
    assert outcome.tests[2].outcome is TestOutcome.PASSED
    assert outcome.session.restarts == 1
    assert [record.nodeid for record in streamed] == ids
    # The dead session's leftover record is gone; the restarted one idles, recorded.
    [idle] = executor.pool.idle_sessions()
    records = list((tmp_path / "work" / "running").glob("*.json"))
    assert [path.name for path in records] == [f"{os.getpid()}-{idle.record_id}.json"]


async def test_too_many_crashes_fail_the_attempt_with_the_rest_not_run(
    context: ExecutionContext, tmp_path: Path
) -> None:
    executor = PytestExecutor(
        pool=SessionPool(kill_grace_seconds=0.5, keep_zygotes=False), max_restarts=0
    )
    project = write_project(
        tmp_path / "proj",
        {
            "test_crash.py": """
                import os, signal

                def test_killed():
                    os.kill(os.getpid(), signal.SIGKILL)

                def test_never():
                    pass
            """
        },
    )
    ids = ["test_crash.py::test_killed", "test_crash.py::test_never"]
    try:
        result = await executor.run(make_task(project, ids), context)
    finally:
        await executor.close()
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INFRASTRUCTURE
    assert "died 1 times" in result.error.message
    outcome = outcome_of(result)
    assert outcome.not_run == ["test_crash.py::test_never"]
    [killed] = outcome.tests
    assert killed.crashed
    assert "killed by SIGKILL" in killed.failure_text


# --------------------------------------------------------------------------- kills


async def test_a_timeout_ends_the_sessions_process_group(
    executor: PytestExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pids"
    project = sleeper_project(tmp_path / "proj", pid_file)
    # Warm the run's session first, so the timed chunk starts at once.
    warm = await executor.run(make_task(project, ["test_slow.py::test_quick"]), context)
    assert warm.status is ResultStatus.COMPLETED

    ids = ["test_slow.py::test_quick", "test_slow.py::test_sleeps", "test_slow.py::test_after"]
    result = await executor.run(make_task(project, ids, timeout=3.0, task_id="test-2"), context)
    assert result.status is ResultStatus.TIMED_OUT
    assert result.error is not None
    assert result.error.error_class is ErrorClass.TIMEOUT
    assert "process group was ended" in result.error.message
    outcome = outcome_of(result)
    assert "test_slow.py::test_sleeps" in outcome.not_run
    assert "test_slow.py::test_after" in outcome.not_run
    if pid_file.exists():  # the sleeping test got as far as starting its grandchild
        pids = read_pids(pid_file)  # the run is over: nothing writes it any more
        assert len(pids) == 2, "the sleeping test was killed while it wrote its pids"
        assert await all_exited(pids)
    assert executor.pool.idle_sessions() == []  # never reused
    assert executor.pool.live_sessions() == []


async def test_cancel_ends_the_sessions_process_group(
    executor: PytestExecutor,
    context: ExecutionContext,
    tmp_path: Path,
    fifo: Callable[[str], Fifo],
) -> None:
    pid_file = fifo("pids")
    project = sleeper_project(tmp_path / "proj", pid_file.path)
    ids = ["test_slow.py::test_quick", "test_slow.py::test_sleeps", "test_slow.py::test_after"]
    run = asyncio.create_task(executor.run(make_task(project, ids), context))
    pids = [int(line) for line in await pid_file.read_lines(2)]
    context.cancel_event.set()
    result = await asyncio.wait_for(run, 60)

    assert result.status is ResultStatus.CANCELLED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.CANCELLED
    outcome = outcome_of(result)
    assert [record.nodeid for record in outcome.tests] == ["test_slow.py::test_quick"]
    assert outcome.not_run == ids[1:]
    assert await all_exited(pids)
    assert list((tmp_path / "work" / "running").glob("*.json")) == []


async def test_the_agent_going_away_ends_the_session_before_the_cancel_propagates(
    executor: PytestExecutor,
    context: ExecutionContext,
    tmp_path: Path,
    fifo: Callable[[str], Fifo],
) -> None:
    pid_file = fifo("pids")
    project = sleeper_project(tmp_path / "proj", pid_file.path)
    run = asyncio.create_task(
        executor.run(make_task(project, ["test_slow.py::test_sleeps"]), context)
    )
    pids = [int(line) for line in await pid_file.read_lines(2)]
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert executor.pool.live_sessions() == []
    assert await all_exited(pids)


async def test_cancelled_before_it_starts_runs_nothing(
    executor: PytestExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "proj", {"test_simple.py": SIMPLE})
    context.cancel_event.set()
    result = await executor.run(make_task(project, ["test_simple.py::test_one"]), context)
    assert result.status is ResultStatus.CANCELLED
    assert outcome_of(result).not_run == ["test_simple.py::test_one"]
    assert executor.pool.live_sessions() == []


# --------------------------------------------------------------------------- bad input


async def test_a_missing_project_path_is_invalid_config(
    executor: PytestExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    result = await executor.run(make_task(missing, ["test_x.py::test_x"]), context)
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert result.error.message == (
        f"project.path '{missing}' does not exist on worker worker-test"
    )
    assert outcome_of(result).not_run == ["test_x.py::test_x"]


async def test_an_unknown_pytest_option_fails_with_pytests_message(
    executor: PytestExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "proj", {"test_simple.py": SIMPLE})
    task = make_task(project, ["test_simple.py::test_one"], args=["--no-such-option"])
    result = await executor.run(task, context)
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert "usage error" in result.error.message
    assert "unrecognized arguments: --no-such-option" in result.error.message
    assert "worker-test" in result.error.message


async def test_a_missing_interpreter_is_invalid_config(
    executor: PytestExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "proj", {"test_simple.py": SIMPLE})
    task = make_task(project, ["test_simple.py::test_one"], python="/no/such/python3")
    result = await executor.run(task, context)
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert "'/no/such/python3' not found on worker worker-test" in result.error.message


async def test_an_invalid_config_names_the_field(
    executor: PytestExecutor, context: ExecutionContext
) -> None:
    # Built without validation, as a document from an older coordinator could arrive.
    task = TaskSpec.model_construct(
        task_id="test-1",
        type=TaskType.TEST,
        timeout_seconds=60.0,
        config={"run_id": "run-1", "project": {"path": "/tmp"}, "node_ids": "tests/"},
    )
    result = await executor.run(task, context)
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert "node_ids" in result.error.message


async def test_a_repository_at_a_commit_is_checked_out_and_its_errors_are_invalid_config(
    executor: PytestExecutor, context: ExecutionContext, tmp_path: Path
) -> None:
    origin = write_project(tmp_path / "origin", {"test_simple.py": SIMPLE})
    sha = commit_all(origin)

    source = {"repo": str(origin), "commit": sha}
    task = make_task(None, ["test_simple.py::test_three"], source=source)
    result = await executor.run(task, context)
    assert result.status is ResultStatus.COMPLETED, result.error
    assert verdicts(outcome_of(result)) == {"test_three": TestOutcome.PASSED}
    [session] = executor.pool.idle_sessions()
    assert session.key is not None
    assert Path(session.key.project).is_relative_to(context.work_dir / "repos")

    missing = {"repo": str(origin), "commit": "0123456789abcdef"}
    task = make_task(None, ["test_simple.py::test_three"], source=missing)
    result = await executor.run(task, context)
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert "0123456789abcdef" in result.error.message


# --------------------------------------------------------------------------- wiring


def test_default_executors_include_tests_where_pytest_is_installed() -> None:
    executors = default_executors()
    assert isinstance(executors[TaskType.TEST], PytestExecutor)


async def test_prewarm_starts_a_zygote_for_the_workers_interpreter() -> None:
    executor = PytestExecutor(pool=SessionPool(kill_grace_seconds=0.5))
    try:
        await executor.prewarm()
        zygote = await executor.pool.zygote()
        assert zygote is not None
        assert zygote.alive
        assert zygote.python == sys.executable
    finally:
        await executor.close()
    assert gone(zygote.pid)


async def test_a_cancel_kills_a_session_whose_test_ignores_sigterm(
    executor: PytestExecutor,
    context: ExecutionContext,
    tmp_path: Path,
    fifo: Callable[[str], Fifo],
) -> None:
    # Issue 12: SIGTERM ignored by the session and its test's child: SIGKILL after the grace.
    pid_file = fifo("pids")
    project = write_project(
        tmp_path / "proj",
        {
            "test_stubborn.py": f"""
                import os, signal, subprocess, sys, time

                def test_stubborn():
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
                    with open({str(pid_file.path)!r}, "w") as f:
                        f.write(f"{{os.getpid()}}\\n{{child.pid}}\\n")
                    time.sleep(60)
            """
        },
    )
    run = asyncio.create_task(
        executor.run(make_task(project, ["test_stubborn.py::test_stubborn"]), context)
    )
    pids = [int(line) for line in await pid_file.read_lines(2)]
    context.cancel_event.set()
    result = await asyncio.wait_for(run, 60)

    assert result.status is ResultStatus.CANCELLED
    assert await all_exited(pids)
    assert executor.pool.live_sessions() == []
