"""A worker's pytest session starts and reports as serial pytest would, with real
child processes on tiny projects written into tmp_path.

* It starts as ``pytest`` starts in that project: under ``filterwarnings =
  error`` with the installed plugins, which pytest must import (and rewrite)
  itself, after reading the configuration; with exactly the installed plugins
  the run's own pytest loaded (``TestConfig.plugins``), and a message naming
  one the worker lacks.
* It keeps every report a test makes: its subtests' with their context.
* A test that calls ``pytest.exit()`` stops its chunk and its session, and the
  attempt fails saying so, with the rest of the chunk not run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from testfleet.domain.enums import ErrorClass, ResultStatus, TaskType
from testfleet.domain.pytest_tasks import (
    InterruptKind,
    PytestPlugin,
    TestChunkOutcome,
    TestOutcome,
    TestPhase,
    TestRecord,
)
from testfleet.domain.task import TaskSpec
from testfleet.worker.executors.base import ExecutionContext
from testfleet.worker.executors.pytest_run import PytestExecutor
from testfleet.worker.pytest_sessions.session_setup import installed_plugins
from testfleet.worker.pytest_sessions.sessions import (
    Activation,
    SessionKey,
    SessionPool,
    SessionStartError,
)

#: The suites' own configuration: every warning is an error, as in the
#: projects of the issue. pytest-asyncio (a development extra, installed
#: here) warns when its loop scope is unset, so a suite that loads it says.
STRICT_INI = """\
[pytest]
filterwarnings = error
addopts = --strict-config --strict-markers
"""
ASYNCIO_SCOPE = "asyncio_default_fixture_loop_scope = function\n"


def write_project(root: Path, ini: str, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text(ini)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


def key_for(project: Path, plugins: list[PytestPlugin] | None) -> SessionKey:
    return SessionKey(
        run_id="run-1",
        project=str(project),
        python=sys.executable,
        args=("-p", "no:cacheprovider"),
        env=(),
        plugins=None
        if plugins is None
        else json.dumps([plugin.model_dump(mode="json") for plugin in plugins]),
    )


def activation(tmp_path: Path) -> Activation:
    return Activation(env=dict(os.environ), work_dir=tmp_path / "work", worker_id="worker-test")


@pytest.fixture
async def pool() -> AsyncIterator[SessionPool]:
    pool = SessionPool(kill_grace_seconds=0.5, keep_zygotes=False)
    yield pool
    await pool.close()


async def run(
    pool: SessionPool, tmp_path: Path, project: Path, node_ids: list[str], **key: Any
) -> list[TestRecord]:
    session, _ = await pool.acquire(key_for(project, key.get("plugins")), activation(tmp_path))
    batches: list[list[TestRecord]] = []
    end = await session.run_chunk(node_ids, {}, batches.append)
    pool.release(session)
    assert end.finished, (end, session.output_text())
    return [TestRecord.model_validate(r.model_dump(mode="json")) for b in batches for r in b]


def plugin(name: str) -> PytestPlugin:
    return PytestPlugin(name=name, distribution=f"dist-of-{name}", version="1.0")


# ------------------------------------------------------------------- start-up

PLUGINS_LOADED = """
import sys


def test_sees_its_plugins(request):
    manager = request.config.pluginmanager
    loaded = sorted(manager.get_name(p) for p, _ in manager.list_plugin_distinfo())
    print("LOADED", loaded)
    # pytest imported and rewrote the installed plugins' modules itself,
    # after reading this project's configuration, as a serial run does.
    for name, module in manager.list_name_plugin():
        if name in dict.fromkeys(loaded) and hasattr(module, "__loader__"):
            assert type(module.__loader__).__name__ == "AssertionRewritingHook", name
"""


async def test_a_suite_that_makes_warnings_errors_starts_with_every_installed_plugin(
    pool: SessionPool, tmp_path: Path
) -> None:
    """The issue's suites: every test an error, "Module already imported so
    cannot be rewritten", because the zygote had imported the plugins."""
    assert {"anyio", "xdist", "asyncio"} <= set(installed_plugins()), "needs the dev extras"
    project = write_project(
        tmp_path / "p", STRICT_INI + ASYNCIO_SCOPE, {"test_p.py": PLUGINS_LOADED}
    )

    records = await run(pool, tmp_path, project, ["test_p.py::test_sees_its_plugins"])

    (record,) = records
    assert record.outcome is TestOutcome.PASSED, record.failure_text
    loaded = next(p for p in record.phases if p.when is TestPhase.CALL).sections[0][1]
    for name in ("anyio", "asyncio", "xdist", "timeout"):
        assert repr(name) in loaded, loaded


async def test_a_session_loads_exactly_the_plugins_the_run_loaded(
    pool: SessionPool, tmp_path: Path
) -> None:
    """A worker installed with more plugins than the client (testfleet's dev
    extras) must not add them: pytest-asyncio would warn (an error here)."""
    project = write_project(tmp_path / "p", STRICT_INI, {"test_p.py": PLUGINS_LOADED})

    records = await run(
        pool, tmp_path, project, ["test_p.py::test_sees_its_plugins"], plugins=[plugin("anyio")]
    )

    (record,) = records
    assert record.outcome is TestOutcome.PASSED, record.failure_text
    loaded = next(p for p in record.phases if p.when is TestPhase.CALL).sections[0][1]
    assert loaded.strip() == "LOADED ['anyio']"


async def test_a_plugin_the_worker_lacks_stops_the_session_naming_it(
    pool: SessionPool, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "p", "[pytest]\n", {"test_p.py": "def test_a(): pass\n"})
    wanted = [plugin("anyio"), plugin("testfleet"), plugin("not-here")]

    with pytest.raises(SessionStartError) as raised:
        await pool.acquire(key_for(project, wanted), activation(tmp_path))

    assert raised.value.error_class is ErrorClass.INVALID_CONFIG
    assert "dist-of-not-here 1.0 (plugin 'not-here')" in raised.value.message
    # anyio is installed here; testfleet's own plugin is not required of a worker.
    assert "dist-of-anyio" not in raised.value.message
    assert "dist-of-testfleet" not in raised.value.message


# ------------------------------------------------------------------- subtests

SUBTESTS = """
import unittest


class TestSub(unittest.TestCase):
    def test_loop(self):
        for i in range(3):
            with self.subTest("step", i=i):
                self.assertNotEqual(i, 1)


def test_fixture(subtests):
    for word in ["a", "b"]:
        with subtests.test(word=word):
            assert word == "a"
"""


async def test_every_subtest_report_is_kept_with_its_context(
    pool: SessionPool, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "p", STRICT_INI + ASYNCIO_SCOPE, {"test_s.py": SUBTESTS})

    records = await run(
        pool, tmp_path, project, ["test_s.py::TestSub::test_loop", "test_s.py::test_fixture"]
    )

    loop, fixture = records
    assert [(p.when.value, p.outcome.value) for p in loop.phases] == [
        ("setup", "passed"),
        ("call", "passed"),
        ("call", "failed"),
        ("call", "passed"),
        ("call", "passed"),  # the test's own call: unittest leaves it passed
        ("teardown", "passed"),
    ]
    contexts = [p.subtest for p in loop.phases if p.subtest is not None]
    assert [(c.msg, c.kwargs) for c in contexts] == [
        ("step", {"i": "0"}),
        ("step", {"i": "1"}),
        ("step", {"i": "2"}),
    ]
    assert loop.outcome is TestOutcome.FAILED
    # The fixture's test is marked failed by pytest itself, as reported.
    own_call = [p for p in fixture.phases if p.when is TestPhase.CALL and p.subtest is None]
    assert [p.outcome.value for p in own_call] == ["failed"]
    assert own_call[0].longrepr == "contains 1 failed subtest"
    assert fixture.outcome is TestOutcome.FAILED


# ------------------------------------------------------------------- pytest.exit

EXITS = """
import pytest


def test_before():
    pass


def test_exits():
    pytest.exit("enough", returncode=3)


def test_after():
    pass
"""


async def test_pytest_exit_stops_the_chunk_and_fails_the_attempt_with_the_rest_not_run(
    tmp_path: Path,
) -> None:
    project = write_project(tmp_path / "p", "[pytest]\n", {"test_e.py": EXITS})
    node_ids = [f"test_e.py::{name}" for name in ("test_before", "test_exits", "test_after")]
    task = TaskSpec(
        task_id="test-1",
        type=TaskType.TEST,
        timeout_seconds=120,
        config={"run_id": "run-1", "project": {"path": str(project)}, "node_ids": node_ids},
    )
    context = ExecutionContext(
        worker_id="worker-test",
        attempt_id=7,
        attempt=1,
        cancel_event=asyncio.Event(),
        work_dir=tmp_path / "work",
    )
    executor = PytestExecutor(pool=SessionPool(kill_grace_seconds=0.5, keep_zygotes=False))
    try:
        result = await executor.run(task, context)
        # The session that ran it is not kept for the run's next chunk.
        assert executor.pool.idle_sessions() == []
    finally:
        await executor.close()

    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.TASK_FAILURE
    assert "test_e.py::test_exits stopped the pytest session" in result.error.message
    outcome = TestChunkOutcome.model_validate(result.results)
    before, exits = outcome.tests
    assert before.outcome is TestOutcome.PASSED
    assert exits.outcome is TestOutcome.INTERRUPTED
    assert exits.interrupted is not None
    assert exits.interrupted.kind is InterruptKind.EXIT
    assert (exits.interrupted.message, exits.interrupted.returncode) == ("enough", 3)
    # pytest made its setup report before the call stopped everything.
    assert [p.when for p in exits.phases] == [TestPhase.SETUP]
    assert outcome.not_run == ["test_e.py::test_after"]


# ------------------------------------------------------------------- lazy collection


async def test_files_collected_by_later_chunks_see_their_directorys_conftest(
    pool: SessionPool, tmp_path: Path
) -> None:
    """pytest 9.1+ gives a conftest's fixtures to the Directory node collected
    for it, once: a lazy session collects each chunk's files anew, and the
    second chunk's tests did not find them ("fixture 'answer' not found")."""
    project = write_project(tmp_path / "p", "[pytest]\n", {})
    (project / "tests").mkdir()
    (project / "tests" / "conftest.py").write_text(
        "import pytest\n\n\n@pytest.fixture\ndef answer():\n    return 42\n"
    )
    for name in ("test_one.py", "test_two.py"):
        (project / "tests" / name).write_text("def test_it(answer):\n    assert answer == 42\n")
    key = SessionKey(
        run_id="run-1", project=str(project), python=sys.executable, args=("tests",), env=()
    )
    session, _ = await pool.acquire(key, activation(tmp_path))

    outcomes = []
    for nodeid in ("tests/test_one.py::test_it", "tests/test_two.py::test_it"):
        batches: list[list[TestRecord]] = []
        end = await session.run_chunk([nodeid], {}, batches.append)
        assert end.finished
        ((record,),) = batches
        outcomes.append((record.outcome, record.failure_text[-200:]))

    assert outcomes == [(TestOutcome.PASSED, ""), (TestOutcome.PASSED, "")]
