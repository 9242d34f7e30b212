"""``testfleet run`` against a real coordinator and real workers on loopback.

What is checked here (the counts-equal-serial comparisons live in
test_it_real_suite.py):

* a worker killed mid-chunk: the tests it had reported stay reported (they
  ran once), the rest of its chunk runs on another worker, and every test is
  counted once;
* ``--rerun-failures``: a test failing on one worker passes on another, is
  reported as passed and flaky, and DuckDB keeps both outcomes;
* bad input: a path that does not exist, an unknown pytest option, a
  collection error, a test that kills its pytest process, a test that needs
  hardware no worker has, a git commit that does not exist — each gets a
  clear message, and the rest of the run goes on;
* code from a git repository at a commit, cloned by the workers;
* the second run of a suite is split by the durations the first one stored.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet

from testfleet.domain.pytest_tasks import TestOutcome

#: An upper bound for one `testfleet run` process, never an expectation.
RUN_TIMEOUT = 180


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def run(
    fleet: Fleet, project: Path, *args: str, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """``testfleet run ARGS`` in ``project``; output is stdout and stderr together."""
    return subprocess.run(
        [sys.executable, "-m", "testfleet", "run", "--coordinator", fleet.url, *args],
        cwd=project,
        env=fleet.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(
    fleet: Fleet, *workers: str, heartbeat_timeout: float = RELAXED_HEARTBEAT_TIMEOUT
) -> None:
    fleet.start_coordinator(heartbeat_timeout=heartbeat_timeout)
    for worker in workers:
        fleet.start_worker(worker, wait=False)
    fleet.wait_for_workers(list(workers))


def final_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("=")]
    return lines[-1] if lines else ""


def test_a_worker_lost_mid_chunk_loses_only_its_unfinished_tests(
    fleet: Fleet, tmp_path: Path
) -> None:
    # 40 tests on one 1-slot worker split by count into chunks of 10. On the
    # worker "doomed", case 2 blocks: cases 0 and 1 have finished (and were
    # streamed) by then. The worker is killed; "rescue" finishes the chunk.
    ran = tmp_path / "ran.log"
    blocked = tmp_path / "blocked.pid"
    project = write(
        tmp_path / "project",
        {
            "tests/test_chain.py": f"""
                import os, time
                import pytest

                @pytest.mark.parametrize("i", range(40))
                def test_case(i):
                    worker = os.environ["TESTFLEET_WORKER_ID"]
                    with open({str(ran)!r}, "a") as f:
                        f.write(f"{{i}} {{worker}}\\n")
                    if i == 2 and worker == "doomed":
                        with open({str(blocked)!r}, "w") as f:
                            f.write(str(os.getpid()))
                        time.sleep(600)
            """
        },
    )
    start(fleet, "doomed", heartbeat_timeout=2.0)
    command = ["run", "--coordinator", fleet.url, "--run-id", "lost1", "tests"]
    run_process = subprocess.Popen(
        [sys.executable, "-m", "testfleet", *command],
        cwd=project,
        env=fleet.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        fleet.wait_until(lambda: blocked.exists() and blocked.read_text(), what="case 2 to block")
        fleet.extra_pids.add(int(blocked.read_text()))

        def reported() -> set[str]:
            rows = fleet.client.test_run("lost1")["tests"]
            return {row["nodeid"].rpartition("[")[2].rstrip("]") for row in rows}

        # Reported means recorded by the coordinator (the worker streams
        # finished tests a fraction of a second later, in batches).
        fleet.wait_until(lambda: {"0", "1"} <= reported(), what="cases 0 and 1 to be reported")
        fleet.send_signal(fleet.processes["doomed"], signal.SIGKILL)
        fleet.start_worker("rescue")
        output, _ = run_process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if run_process.poll() is None:
            run_process.kill()
    assert run_process.returncode == 0, output
    assert "40 passed" in final_line(output), output
    runs = [tuple(line.split()) for line in ran.read_text().splitlines()]
    # Reported before the loss: ran once, on the doomed worker, never again.
    assert runs.count(("0", "doomed")) == 1
    assert runs.count(("1", "doomed")) == 1
    assert ("0", "rescue") not in runs
    assert ("1", "rescue") not in runs
    # Unfinished: the blocked case and the rest of its chunk ran on the rescue.
    assert ("2", "rescue") in runs
    assert ("9", "rescue") in runs
    fleet.stop_all()
    with fleet.open_store() as store:
        rows = store.run_test_rows("lost1")
        tasks = {t.task_id: t for t in store.run_tasks("lost1")}
    recorded = {row.nodeid: row.worker_id for row in rows}
    assert len(rows) == len(recorded) == 40  # each test recorded once
    assert recorded["tests/test_chain.py::test_case[0]"] == "doomed"
    assert recorded["tests/test_chain.py::test_case[1]"] == "doomed"
    assert recorded["tests/test_chain.py::test_case[2]"] == "rescue"
    assert tasks["lost1.r0.00000"].attempts == 2


def test_a_flaky_test_is_rerun_on_another_worker_and_reported_as_flaky(
    fleet: Fleet, tmp_path: Path
) -> None:
    # The test fails on the first worker that runs it and passes anywhere else:
    # passing on the rerun shows the rerun went to another worker.
    first = tmp_path / "first-worker"
    project = write(
        tmp_path / "project",
        {
            "tests/test_flaky.py": f"""
                import os

                def test_flaky():
                    worker = os.environ["TESTFLEET_WORKER_ID"]
                    if not os.path.exists({str(first)!r}):
                        open({str(first)!r}, "w").write(worker)
                    assert open({str(first)!r}).read() != worker, "unlucky first worker"

                def test_steady():
                    pass
            """
        },
    )
    start(fleet, "w1", "w2")
    result = run(fleet, project, "--run-id", "flaky1", "tests", "--rerun-failures", "2")
    assert result.returncode == 0, result.stdout
    assert "2 passed, 1 flaky" in final_line(result.stdout), result.stdout
    unlucky = first.read_text()
    assert f"FLAKY tests/test_flaky.py::test_flaky: failed on {unlucky}" in result.stdout
    fleet.stop_all()
    with fleet.open_store() as store:
        rows = store.run_test_rows("flaky1")
    flaky = sorted(
        (r.rerun, r.worker_id, r.outcome) for r in rows if r.nodeid.endswith("::test_flaky")
    )
    assert flaky[0] == (0, unlucky, TestOutcome.FAILED)
    assert flaky[1][0] == 1
    assert flaky[1][1] != unlucky
    assert flaky[1][2] is TestOutcome.PASSED


def test_without_reruns_a_failure_fails_the_run(fleet: Fleet, tmp_path: Path) -> None:
    project = write(
        tmp_path / "project",
        {"tests/test_red.py": "def test_red():\n    assert 1 == 2\n"},
    )
    start(fleet, "w1")
    result = run(fleet, project, "tests")
    assert result.returncode == 1, result.stdout
    assert "1 failed" in final_line(result.stdout)
    assert "assert 1 == 2" in result.stdout


def test_bad_input_gets_clear_messages_and_the_rest_of_the_run_goes_on(
    fleet: Fleet, tmp_path: Path
) -> None:
    project = write(
        tmp_path / "project",
        {
            "tests/test_good.py": """
                def test_one():
                    pass

                def test_two():
                    pass
            """,
            "tests/test_broken.py": """
                import not_a_module_anywhere

                def test_never():
                    pass
            """,
            "tests/test_crash.py": """
                import os

                def test_kills_its_pytest():
                    os._exit(7)

                def test_after_the_crash():
                    pass
            """,
            "tests/test_gpu.py": """
                import pytest

                @pytest.mark.fleet(hardware=["cuda"])
                def test_needs_cuda():
                    pass
            """,
        },
    )
    start(fleet, "w1", "w2")

    missing = run(fleet, project, "no_such_dir")
    assert missing.returncode == 4
    assert "file or directory not found: no_such_dir" in missing.stdout

    unknown = run(fleet, project, "tests", "--no-such-option")
    assert unknown.returncode == 4
    assert "unrecognized arguments: --no-such-option" in unknown.stdout

    result = run(fleet, project, "tests", "-rA", "--fleet-unschedulable-wait", "1")
    output = result.stdout
    assert result.returncode == 1, output
    # Collection error: reported as pytest reports it, the other files still ran.
    assert "ERROR tests/test_broken.py" in output
    assert "No module named 'not_a_module_anywhere'" in output
    # The crash: the test is a failure that says what happened, its neighbour passed.
    assert "FAILED tests/test_crash.py::test_kills_its_pytest" in output
    assert "died while running this test" in output
    assert "PASSED tests/test_crash.py::test_after_the_crash" in output
    # No worker has CUDA: not run, and the summary says why.
    assert "ERROR tests/test_gpu.py::test_needs_cuda" in output
    assert "no connected worker can run it: hardware: needs one of [cuda]" in output
    assert "3 passed" in final_line(output)
    assert "1 failed" in final_line(output)
    assert "2 errors" in final_line(output)


def test_code_from_a_git_commit_and_a_commit_that_does_not_exist(
    fleet: Fleet, tmp_path: Path
) -> None:
    origin = write(
        tmp_path / "origin",
        {
            "tests/test_repo.py": """
                def test_from_the_commit():
                    assert open(__file__).read()
            """
        },
    )

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=origin, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "suite")
    commit = git("rev-parse", "HEAD")
    start(fleet, "w1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env_home = {"HOME": str(tmp_path / "home")}
    result = _run_with_env(
        fleet, elsewhere, env_home, "--repo", str(origin), "--commit", commit, "tests"
    )
    assert result.returncode == 0, result.stdout
    assert "1 passed" in final_line(result.stdout)
    # The worker checked the commit out in its own cache.
    assert list((fleet.work_dir / "w1" / "repos").glob(f"*/checkouts/{commit}"))

    bad = _run_with_env(
        fleet, elsewhere, env_home, "--repo", str(origin), "--commit", "0" * 40, "tests"
    )
    assert bad.returncode == 4
    assert f"commit {'0' * 40} not found" in bad.stdout


def _run_with_env(
    fleet: Fleet, cwd: Path, extra: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testfleet", "run", "--coordinator", fleet.url, *args],
        cwd=cwd,
        env={**fleet.env(), **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def test_the_second_run_is_split_by_the_first_runs_durations(fleet: Fleet, tmp_path: Path) -> None:
    project = write(
        tmp_path / "project",
        {
            "tests/test_many.py": """
                import pytest

                @pytest.mark.parametrize("i", range(30))
                def test_case(i):
                    pass
            """
        },
    )
    start(fleet, "w1", "w2")
    first = run(fleet, project, "tests")
    assert first.returncode == 0, first.stdout
    assert "split by count" in first.stdout
    second = run(fleet, project, "tests", "--junitxml", str(tmp_path / "out.xml"))
    assert second.returncode == 0, second.stdout
    assert "split by durations" in second.stdout
    assert "30 passed" in final_line(second.stdout)
    junit = (tmp_path / "out.xml").read_text()
    assert 'tests="30"' in junit
    assert 'failures="0"' in junit


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupting_a_run_cancels_its_chunks(fleet: Fleet, tmp_path: Path) -> None:
    started = tmp_path / "started"
    project = write(
        tmp_path / "project",
        {
            "tests/test_slow.py": f"""
                import time

                def test_slow():
                    open({str(started)!r}, "w").close()
                    time.sleep(600)
            """
        },
    )
    start(fleet, "w1")
    with subprocess.Popen(
        [sys.executable, "-m", "testfleet", "run", "--coordinator", fleet.url, "tests"],
        cwd=project,
        env=fleet.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C's disposition as in a terminal's foreground job. A test session
        # started in the background by a shell without job control ignores
        # SIGINT, and an ignored signal stays ignored across exec: the run would
        # never see the interrupt this test sends.
        preexec_fn=_default_sigint,
    ) as process:
        try:
            fleet.wait_until(started.exists, what="the slow test to start")
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=RUN_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 2, output  # pytest's "interrupted"
    # The run's chunks (its warm-up task has no node ids and finished at once).
    tasks = [
        t for t in fleet.client.list_tasks(task_type="test")["tasks"] if t["config"].get("node_ids")
    ]
    assert tasks
    assert {t["status"] for t in fleet.wait_terminal([t["task_id"] for t in tasks]).values()} == {
        "cancelled"
    }
    # The worker ended the chunk's pytest process: it stays free for others.
    deadline = time.monotonic() + 60
    while any(w["running"] for w in fleet.client.workers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(w["running"] for w in fleet.client.workers())
