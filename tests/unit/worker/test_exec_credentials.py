"""Tasks never inherit the worker's credentials through the environment.

The worker process here is this pytest process: each test sets testfleet's
credential variables in it, runs a real child the way a task would (a command,
a pytest session, git for a repository) and reads the child's environment
back, both as the child's ``os.environ`` and, for the long-lived pytest
session, as ``/proc/self/environ`` (what the process was started with, which
replacing ``os.environ`` later does not change).
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

import pytest

from testfleet.domain.credential_env import (
    CREDENTIAL_ENV_NAMES,
    is_credential_name,
    without_credentials,
)
from testfleet.domain.enums import ResultStatus, TaskType
from testfleet.domain.pytest_tasks import TestChunkOutcome, TestOutcome
from testfleet.domain.task import TaskSpec
from testfleet.repo_cache import _Git
from testfleet.worker.executors.base import ExecutionContext, attempt_environment
from testfleet.worker.executors.command import CommandExecutor
from testfleet.worker.executors.pytest_run import PytestExecutor
from testfleet.worker.pytest_sessions.sessions import SessionPool

#: What the worker was started with: the listed names, one only the suffix
#: rule catches, and an ordinary variable that must still reach the task.
SECRETS = {
    "TESTFLEET_TOKEN": "tf_worker_secret_1",
    "TESTFLEET_DB_KEY": "db-key-secret-2",
    "TESTFLEET_SOMETHING_SECRET": "suffix-secret-3",
}


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TF_ORDINARY", "kept")


@pytest.fixture
def context(tmp_path: Path) -> ExecutionContext:
    return ExecutionContext(
        worker_id="worker-test",
        attempt_id=3,
        attempt=1,
        cancel_event=asyncio.Event(),
        work_dir=tmp_path / "work",
    )


def test_the_list_and_the_suffix_rule_name_credentials_only() -> None:
    assert {"TESTFLEET_TOKEN", "TESTFLEET_DB_KEY"} <= CREDENTIAL_ENV_NAMES
    assert is_credential_name("TESTFLEET_NEW_API_TOKEN")
    assert is_credential_name("TESTFLEET_TLS_KEY_FILE")
    # Not ours, or ours but not a credential: kept.
    for name in ("TOKEN", "GITHUB_TOKEN", "TESTFLEET_TASK_ID", "TESTFLEET_COORDINATOR", "PATH"):
        assert not is_credential_name(name), name
    env = {"TESTFLEET_TOKEN": "x", "TESTFLEET_DB_KEY": "y", "PATH": "/bin"}
    assert without_credentials(env) == {"PATH": "/bin"}


@pytest.mark.usefixtures("worker_env")
def test_attempt_environment_drops_the_workers_credentials_but_keeps_the_tasks(
    context: ExecutionContext,
) -> None:
    task = TaskSpec(task_id="t", type=TaskType.COMMAND, config={"argv": ["true"]})
    env = attempt_environment(task, context, {"TESTFLEET_TOKEN": "the-tasks-own"})
    assert env["TF_ORDINARY"] == "kept"
    assert env["TESTFLEET_TOKEN"] == "the-tasks-own"  # given by the task itself
    assert "TESTFLEET_DB_KEY" not in env
    assert "TESTFLEET_SOMETHING_SECRET" not in env
    # The benchmark runner's environment is built by the same function.
    assert not set(SECRETS.values()) & set(attempt_environment(task, context).values())


@pytest.mark.usefixtures("worker_env")
async def test_a_command_that_prints_its_environment_sees_no_credential(
    context: ExecutionContext,
) -> None:
    task = TaskSpec(
        task_id="env-dump",
        type=TaskType.COMMAND,
        config={"argv": [sys.executable, "-c", "import os; print(dict(os.environ))"]},
    )
    result = await CommandExecutor().run(task, context)

    assert result.status is ResultStatus.COMPLETED, result.error
    printed = result.results["output_tail"]
    assert "TF_ORDINARY" in printed  # the environment did come through
    for name, value in SECRETS.items():
        assert name not in printed
        assert value not in printed


ENV_TEST = """
import os

SECRETS = {secrets!r}

def test_no_credentials():
    started_with = open("/proc/self/environ", "rb").read().decode(errors="replace")
    for name, value in SECRETS.items():
        assert name not in os.environ
        assert value not in started_with
    assert os.environ["TF_ORDINARY"] == "kept"
"""


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc (Linux)")
@pytest.mark.usefixtures("worker_env")
async def test_a_pytest_session_started_ahead_of_time_never_had_the_credentials(
    context: ExecutionContext, tmp_path: Path
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_env.py").write_text(textwrap.dedent(ENV_TEST.format(secrets=SECRETS)))
    # A zygote: the session child is started before any attempt, from the
    # worker's own environment, and only later activated with the attempt's.
    executor = PytestExecutor(pool=SessionPool(kill_grace_seconds=0.5))
    try:
        await executor.prewarm()
        assert await executor.pool.zygote() is not None
        task = TaskSpec(
            task_id="env-test",
            type=TaskType.TEST,
            config={
                "run_id": "run-env",
                "project": {"path": str(project)},
                "node_ids": ["test_env.py::test_no_credentials"],
            },
        )
        result = await executor.run(task, context)
    finally:
        await executor.close()

    assert result.status is ResultStatus.COMPLETED, result.error
    outcome = TestChunkOutcome.model_validate(result.results)
    assert outcome.session.reused is False
    assert [r.outcome for r in outcome.tests] == [TestOutcome.PASSED], outcome.tests


@pytest.mark.usefixtures("worker_env")
def test_git_run_for_a_tasks_repository_gets_no_credential() -> None:
    git = _Git("git", "https://example.invalid/repo.git", deadline=0.0, timeout_seconds=1.0)
    assert git.env["TF_ORDINARY"] == "kept"
    assert not set(SECRETS) & set(git.env)
    assert os.environ["TESTFLEET_TOKEN"] == SECRETS["TESTFLEET_TOKEN"]  # the worker's own stays
