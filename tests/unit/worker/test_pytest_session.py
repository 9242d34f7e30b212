"""Warm pytest sessions with real child processes on tiny projects written into tmp_path.

Covers what one session reports (every outcome, phases, sections, skips,
xfail, parametrized ids, node ids it never collected), its reuse across
chunks, the zygote, start-up failures, idle eviction with an injected clock,
and the options a worker session must neutralise (xdist, -x). Nothing here
asserts on wall-clock speed.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from process_signals import exited

from testfleet.domain.enums import ErrorClass
from testfleet.domain.pytest_tasks import (
    PhaseReport,
    ReportOutcome,
    TestOutcome,
    TestPhase,
    TestRecord,
    derive_outcome,
)
from testfleet.worker.pytest_sessions.session_child import cap, session_args
from testfleet.worker.pytest_sessions.session_process import PytestSession
from testfleet.worker.pytest_sessions.sessions import (
    Activation,
    SessionKey,
    SessionPool,
    SessionStartError,
)

PY = sys.executable

OUTCOMES = """
import pytest

@pytest.fixture
def broken_setup():
    raise RuntimeError("setup broke")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_pass():
    print("out of test_pass")

def test_fail():
    assert 1 == 2

def test_skip():
    pytest.skip("not here")

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="fixed?")
def test_xpass():
    pass

def test_setup_error(broken_setup):
    pass

def test_teardown_error(broken_teardown):
    pass

@pytest.mark.parametrize("n", [1, pytest.param(2, id="two")])
def test_param(n, record_property):
    record_property("n", n)
    assert n == 1
"""


def write_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


def key_for(
    project: Path, *args: str, run_id: str = "run-1", lazy: bool = False, **env: str
) -> SessionKey:
    """A session key; most tests here check what a session collects when it
    starts, so they use full collection unless ``lazy``."""
    return SessionKey(
        run_id=run_id,
        project=str(project),
        python=PY,
        args=tuple(args),
        env=tuple(sorted(env.items())),
        full_collection=not lazy,
    )


def activation(tmp_path: Path, **env: str) -> Activation:
    return Activation(
        env={**os.environ, **env}, work_dir=tmp_path / "work", worker_id="worker-test"
    )


@pytest.fixture
async def pool() -> AsyncIterator[SessionPool]:
    pool = SessionPool(kill_grace_seconds=0.5, keep_zygotes=False)
    yield pool
    await pool.close()


async def run_chunk(session: PytestSession, node_ids: list[str]) -> list[TestRecord]:
    batches: list[list[TestRecord]] = []
    end = await session.run_chunk(node_ids, {"TESTFLEET_ATTEMPT": "1"}, batches.append)
    assert end.finished, end
    records = [record for batch in batches for record in batch]
    for record in records:  # what crosses the wire must validate as the contract says
        TestRecord.model_validate(record.model_dump(mode="json"))
    return records


def phase(record: TestRecord, when: TestPhase) -> PhaseReport:
    found = [p for p in record.phases if p.when is when]
    assert len(found) == 1, record.phases
    return found[0]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --------------------------------------------------------------------------- reports


async def test_every_outcome_is_reported_with_its_phases(pool: SessionPool, tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj", {"test_outcomes.py": OUTCOMES})
    session, reused = await pool.acquire(key_for(project), activation(tmp_path))
    assert reused is False
    assert session.collection is not None
    assert session.collection.count == 9
    assert session.collection.errors == ()

    names = [
        "test_pass",
        "test_fail",
        "test_skip",
        "test_xfail",
        "test_xpass",
        "test_setup_error",
        "test_teardown_error",
        "test_param[1]",
        "test_param[two]",
    ]
    records = await run_chunk(session, [f"test_outcomes.py::{name}" for name in names])
    by_name = {record.nodeid.split("::")[1]: record for record in records}
    assert list(by_name) == names

    outcomes = {name: derive_outcome(record.phases) for name, record in by_name.items()}
    assert outcomes == {
        "test_pass": TestOutcome.PASSED,
        "test_fail": TestOutcome.FAILED,
        "test_skip": TestOutcome.SKIPPED,
        "test_xfail": TestOutcome.XFAILED,
        "test_xpass": TestOutcome.XPASSED,
        "test_setup_error": TestOutcome.ERROR,
        "test_teardown_error": TestOutcome.ERROR,
        "test_param[1]": TestOutcome.PASSED,
        "test_param[two]": TestOutcome.FAILED,
    }

    passed = by_name["test_pass"]
    assert [p.when for p in passed.phases] == [TestPhase.SETUP, TestPhase.CALL, TestPhase.TEARDOWN]
    assert passed.location.path == "test_outcomes.py"
    assert passed.location.domain == "test_pass"
    assert passed.location.lineno is not None
    assert "test_pass" in passed.keywords
    assert "" not in passed.keywords
    assert ("Captured stdout call", "out of test_pass\n") in phase(passed, TestPhase.CALL).sections
    assert all(p.duration >= 0 and p.stop >= p.start > 0 for p in passed.phases)
    assert passed.crashed is False

    assert "assert 1 == 2" in phase(by_name["test_fail"], TestPhase.CALL).longrepr

    skipped = phase(by_name["test_skip"], TestPhase.CALL)
    assert skipped.outcome is ReportOutcome.SKIPPED
    assert skipped.skip is not None
    assert "not here" in skipped.skip.reason
    assert skipped.skip.path.endswith("test_outcomes.py")
    assert skipped.skip.lineno is not None

    assert phase(by_name["test_xfail"], TestPhase.CALL).wasxfail == "known bug"
    assert phase(by_name["test_xpass"], TestPhase.CALL).wasxfail == "fixed?"

    setup_error = by_name["test_setup_error"]
    assert [p.when for p in setup_error.phases] == [TestPhase.SETUP, TestPhase.TEARDOWN]
    assert "setup broke" in phase(setup_error, TestPhase.SETUP).longrepr

    teardown_error = by_name["test_teardown_error"]
    assert phase(teardown_error, TestPhase.CALL).outcome is ReportOutcome.PASSED
    assert "teardown broke" in phase(teardown_error, TestPhase.TEARDOWN).longrepr

    assert phase(by_name["test_param[1]"], TestPhase.CALL).user_properties == [("n", "1")]
    assert "parametrize" in by_name["test_param[two]"].keywords


async def test_a_node_id_not_collected_gets_a_failed_setup_naming_the_collection_error(
    pool: SessionPool, tmp_path: Path
) -> None:
    project = write_project(
        tmp_path / "proj",
        {"test_ok.py": "def test_ok():\n    pass\n", "test_broken.py": "def test_x(:\n"},
    )
    session, _ = await pool.acquire(key_for(project), activation(tmp_path))
    assert session.collection is not None
    assert [error.nodeid for error in session.collection.errors] == ["test_broken.py"]

    records = await run_chunk(
        session, ["test_broken.py::test_x", "test_gone.py::test_y", "test_ok.py::test_ok"]
    )
    broken, missing, ok = records
    for record in (broken, missing):
        assert derive_outcome(record.phases) is TestOutcome.ERROR
        assert record.phases[0].when is TestPhase.SETUP
        assert "not collected by the pytest session on worker worker-test" in record.failure_text
    assert "SyntaxError" in broken.failure_text
    assert missing.location.path == "test_gone.py"
    assert "no test with this node id" in missing.failure_text
    assert derive_outcome(ok.phases) is TestOutcome.PASSED


async def test_xdist_and_exitfirst_do_not_change_what_a_worker_session_runs(
    pool: SessionPool, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    project = write_project(
        tmp_path / "proj",
        {
            "test_a_broken.py": "import nothing_here_at_all\n",
            "test_b.py": f"""
                import os

                def test_fails():
                    assert False

                def test_after():
                    with open({str(pids)!r}, "a") as f:
                        f.write(str(os.getpid()))
            """,
        },
    )
    # -x would stop at the first collection error and the first failure; -n 2
    # would start xdist workers. The fleet decides both, not the session.
    session, _ = await pool.acquire(key_for(project, "-x", "-n", "2"), activation(tmp_path))
    assert session.collection is not None
    assert session.collection.count == 2
    records = await run_chunk(session, ["test_b.py::test_fails", "test_b.py::test_after"])
    assert [derive_outcome(r.phases) for r in records] == [TestOutcome.FAILED, TestOutcome.PASSED]
    assert pids.read_text() == str(session.pid)  # ran in the session, not an xdist worker


# --------------------------------------------------------------------------- reuse


async def test_a_second_chunk_reuses_the_session_and_collects_once(
    pool: SessionPool, tmp_path: Path
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
            "test_outcomes.py": OUTCOMES,
        },
    )
    key = key_for(project)
    first, reused = await pool.acquire(key, activation(tmp_path))
    assert reused is False
    [record] = await run_chunk(first, ["test_outcomes.py::test_pass"])
    assert derive_outcome(record.phases) is TestOutcome.PASSED
    pool.release(first)

    second, reused = await pool.acquire(key, activation(tmp_path))
    assert reused is True
    assert second is first
    # The same item again (a rerun chunk): its earlier output is not reported twice.
    [again] = await run_chunk(second, ["test_outcomes.py::test_pass"])
    sections = phase(again, TestPhase.CALL).sections
    assert sections == [("Captured stdout call", "out of test_pass\n")]
    assert derive_outcome(again.phases) is TestOutcome.PASSED
    assert collections.read_text() == "collected\n"

    # Another run's chunk never gets this session.
    other, reused = await pool.acquire(key_for(project, run_id="run-2"), activation(tmp_path))
    assert reused is False
    assert other is not first
    assert collections.read_text() == "collected\n" * 2


async def test_a_lazy_session_collects_only_the_files_its_chunks_need(
    pool: SessionPool, tmp_path: Path
) -> None:
    imported = tmp_path / "imported"
    module = f"""
        with open({str(imported)!r}, "a") as f:
            f.write(__name__ + "\\n")

        def test_here():
            pass
    """
    project = write_project(
        tmp_path / "proj",
        {"test_a.py": module, "test_b.py": module, "test_c.py": module},
    )
    session, _ = await pool.acquire(key_for(project, lazy=True), activation(tmp_path))
    assert session.collection is not None
    assert session.collection.count == 0
    assert not imported.exists()

    [record] = await run_chunk(session, ["test_b.py::test_here"])
    assert derive_outcome(record.phases) is TestOutcome.PASSED
    assert imported.read_text().split() == ["test_b"]
    assert session.collection.count == 1
    assert session.chunk_collect_seconds > 0

    records = await run_chunk(session, ["test_a.py::test_here", "test_b.py::test_here"])
    assert [derive_outcome(r.phases) for r in records] == [TestOutcome.PASSED] * 2
    # test_b was collected once; test_c, never needed, never imported.
    assert imported.read_text().split() == ["test_b", "test_a"]
    assert session.collection.count == 2

    # A file this worker does not have: a clear record, and the session goes on.
    [missing, fine] = await run_chunk(session, ["gone.py::test_x", "test_c.py::test_here"])
    assert derive_outcome(missing.phases) is TestOutcome.ERROR
    assert "gone.py" in missing.phases[0].longrepr
    assert "not found" in missing.phases[0].longrepr
    assert derive_outcome(fine.phases) is TestOutcome.PASSED


async def test_the_zygote_is_activated_and_replaced(tmp_path: Path) -> None:
    pool = SessionPool(kill_grace_seconds=0.5)
    try:
        await pool.prewarm()
        zygote = await pool.zygote()
        assert zygote is not None
        assert zygote.collection is None
        assert zygote.pytest_version == pytest.__version__
        project = write_project(tmp_path / "proj", {"test_one.py": "def test_one():\n    pass\n"})
        session, _ = await pool.acquire(key_for(project), activation(tmp_path))
        assert session is zygote
        assert session.collection is not None
        replacement = await pool.zygote()
        assert replacement is not None
        assert replacement is not zygote
        assert replacement.alive
    finally:
        await pool.close()
    assert gone(zygote.pid)
    assert gone(replacement.pid)
    assert pool.live_sessions() == []


async def test_startup_environment_gets_a_cold_child(pool: SessionPool, tmp_path: Path) -> None:
    project = write_project(
        tmp_path / "proj",
        {
            "test_env.py": """
                import os, sys

                def test_env():
                    assert os.environ["PYTHONHASHSEED"] == "7"
                    assert sys.flags.hash_randomization == 1
                    assert os.environ["TESTFLEET_ATTEMPT"] == "1"
            """
        },
    )
    key = key_for(project, PYTHONHASHSEED="7")
    assert key.needs_cold_start
    session, _ = await pool.acquire(key, activation(tmp_path, PYTHONHASHSEED="7"))
    [record] = await run_chunk(session, ["test_env.py::test_env"])
    assert derive_outcome(record.phases) is TestOutcome.PASSED, record.failure_text


# --------------------------------------------------------------------------- failures


async def test_an_unknown_option_is_a_usage_error_with_pytests_message(
    pool: SessionPool, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "proj", {"test_one.py": "def test_one():\n    pass\n"})
    with pytest.raises(SessionStartError) as caught:
        await pool.acquire(key_for(project, "--no-such-option"), activation(tmp_path))
    assert caught.value.error_class is ErrorClass.INVALID_CONFIG
    assert "exit code 4: usage error" in caught.value.message
    assert "unrecognized arguments: --no-such-option" in caught.value.message
    assert pool.live_sessions() == []
    assert list((tmp_path / "work" / "running").glob("*.json")) == []


async def test_an_interpreter_without_pytest_cannot_start_a_session(
    pool: SessionPool, tmp_path: Path
) -> None:
    # -I would ignore the environment; a bare interpreter with a site directory
    # that cannot see the venv's packages stands in for one without pytest.
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec {sys.base_prefix}/bin/python3 -S "$@"\n')
    bare.chmod(0o755)
    project = write_project(tmp_path / "proj", {"test_one.py": "def test_one():\n    pass\n"})
    key = SessionKey(run_id="run-1", project=str(project), python=str(bare), args=(), env=())
    with pytest.raises(SessionStartError) as caught:
        await pool.acquire(key, activation(tmp_path))
    assert caught.value.error_class is ErrorClass.INFRASTRUCTURE
    assert "cannot import pytest" in caught.value.message


# --------------------------------------------------------------------------- idle


async def test_idle_sessions_are_evicted_by_the_injected_clock(tmp_path: Path) -> None:
    now = [1000.0]
    pool = SessionPool(
        kill_grace_seconds=0.5, keep_zygotes=False, idle_seconds=100, clock=lambda: now[0]
    )
    try:
        project = write_project(tmp_path / "proj", {"test_one.py": "def test_one():\n    pass\n"})
        session, _ = await pool.acquire(key_for(project), activation(tmp_path))
        await run_chunk(session, ["test_one.py::test_one"])
        pool.release(session)
        assert pool.idle_sessions() == [session]
        assert list((tmp_path / "work" / "running").glob("*.json")) != []

        assert await pool.evict_idle(now=1099.0) == 0
        assert session.alive
        now[0] = 1100.0
        assert await pool.evict_idle() == 1
        assert pool.idle_sessions() == []
        assert not session.alive
        assert gone(session.pid)
        assert list((tmp_path / "work" / "running").glob("*.json")) == []
        assert session.temp_dir is not None
        assert not session.temp_dir.exists()
    finally:
        await pool.close()


async def test_idle_sessions_beyond_max_idle_are_closed_oldest_first(tmp_path: Path) -> None:
    now = [0.0]
    pool = SessionPool(kill_grace_seconds=0.5, keep_zygotes=False, max_idle=1, clock=lambda: now[0])
    try:
        project = write_project(tmp_path / "proj", {"test_one.py": "def test_one():\n    pass\n"})
        first, _ = await pool.acquire(key_for(project, run_id="a"), activation(tmp_path))
        second, _ = await pool.acquire(key_for(project, run_id="b"), activation(tmp_path))
        pool.release(first)
        now[0] = 1.0
        pool.release(second)
        assert pool.idle_sessions() == [second]
        # The pool closes the one it evicts in the background: wait for its exit.
        assert await exited(first.pid)
    finally:
        await pool.close()


# --------------------------------------------------------------------------- helpers


def test_session_args_put_the_sessions_directories_before_a_double_dash() -> None:
    assert session_args(["-q", "tests"], "/b", "/c") == [
        "-q",
        "tests",
        "-o",
        "cache_dir=/c",
        "--basetemp=/b",
    ]
    assert session_args(["-q", "--", "-weird"], "/b", "/c") == [
        "-q",
        "-o",
        "cache_dir=/c",
        "--basetemp=/b",
        "--",
        "-weird",
    ]
    # No cache plugin: an -o for its ini key would be an unknown option.
    assert session_args(["-p", "no:cacheprovider"], "/b", "/c") == [
        "-p",
        "no:cacheprovider",
        "--basetemp=/b",
    ]


def test_cap_keeps_head_and_tail_within_the_limit() -> None:
    text = "HEAD" + "x" * 50_000 + "TAIL"
    capped = cap(text, 1000)
    assert len(capped) <= 1000
    assert capped.startswith("HEAD")
    assert capped.endswith("TAIL")
    assert "characters cut" in capped
    assert cap("short", 1000) == "short"
