"""The ``testfleet`` CLI end to end, as a user runs it, against a real coordinator and worker.

Every command runs as its own process (``python -m testfleet ...``) and finds
the coordinator through ``$TESTFLEET_COORDINATOR``. The tests share one fleet
but not an order: a test that reads the two tasks of the YAML file asks for
the ``submitted`` (or ``finished``) fixture, which submits them once.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet, free_port, pid_alive

from testfleet.worker.executors.registry import benchmarks_available

pytestmark = [pytest.mark.integration]

WORKER = "cli-worker"


@dataclass
class Cli:
    fleet: Fleet
    root: Path

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "testfleet", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.fleet.env(),
            cwd=self.root,
            timeout=90,
            check=False,
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str) -> dict:
        return json.loads(self.ok(*args, "--json"))


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    root = Path(tmp_path_factory.mktemp("cli"))
    fleet = Fleet(root)
    try:
        fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
        fleet.start_worker(WORKER, slots=2)
        yield Cli(fleet, root)
    finally:
        fleet.close()


def test_help_lists_the_commands(cli):
    out = cli.ok("--help")
    for command in ("coordinator", "worker", "submit", "tasks", "task", "workers", "cancel"):
        assert command in out
    assert "wait" in out


@dataclass(frozen=True)
class Submitted:
    """The YAML file's two tasks, submitted once for the module."""

    answer: dict
    good: str = "cli-echo"
    bad: str = "cli-exit-3"


@pytest.fixture(scope="module")
def submitted(cli: Cli) -> Submitted:
    tasks_file = cli.root / "two.yaml"
    tasks_file.write_text(
        textwrap.dedent(
            f"""\
            # the task documents of docs/formats.md, as a YAML list
            - task_id: cli-echo
              type: command
              priority: 2
              config:
                argv: [echo, hello-from-the-cli]
              timeout_seconds: 60
            - task_id: cli-exit-3
              type: command
              config:
                argv: ["{sys.executable}", "-c", "import sys; print('failing'); sys.exit(3)"]
              retry_policy:
                max_retries: 0
            """
        )
    )
    return Submitted(answer=cli.json("submit", str(tasks_file)))


@pytest.fixture(scope="module")
def finished(cli: Cli, submitted: Submitted) -> Submitted:
    """The two tasks, once both have ended."""
    cli.fleet.wait_terminal([submitted.good, submitted.bad])
    return submitted


def test_submit_a_yaml_file_of_two_tasks(submitted):
    assert submitted.answer == {"accepted": 2, "task_ids": ["cli-echo", "cli-exit-3"]}


def test_wait_exits_0_for_a_completed_task_and_1_for_a_failed_one(cli, submitted):
    ids = {"good": submitted.good, "bad": submitted.bad}
    good = cli.run("wait", ids["good"], "--timeout", "90", "--poll", "0.2")
    assert good.returncode == 0, (good.stdout, good.stderr)
    assert "cli-echo" in good.stdout
    bad = cli.run("wait", ids["bad"], "--timeout", "90", "--poll", "0.2", "--json")
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    (task,) = json.loads(bad.stdout)["tasks"]
    assert task["status"] == "failed"
    assert task["error"]["error_class"] == "task_failure"
    both = cli.run("wait", ids["good"], ids["bad"], "--timeout", "90")
    assert both.returncode == 1


def test_tasks_json_lists_both(cli, finished):
    ids = {"good": finished.good, "bad": finished.bad}
    page = cli.json("tasks")
    by_id = {t["task_id"]: t for t in page["tasks"]}
    assert by_id[ids["good"]]["status"] == "completed"
    assert by_id[ids["bad"]]["status"] == "failed"
    failed = cli.json("tasks", "--status", "failed")
    assert [t["task_id"] for t in failed["tasks"]] == [ids["bad"]]
    assert failed["total"] == 1


def test_task_json_has_attempts_and_a_seed_format_result(cli, finished):
    ids = {"good": finished.good, "bad": finished.bad}
    detail = cli.json("task", ids["good"])
    assert detail["task"]["task_id"] == ids["good"]
    assert detail["task"]["status"] == "completed"
    (attempt,) = detail["attempts"]
    assert attempt["attempt"] == 1
    assert attempt["worker_id"] == WORKER
    assert attempt["status"] == "completed"
    result = detail["result"]
    for key in (
        "task_id",
        "worker_id",
        "status",
        "execution_time_seconds",
        "hardware_metrics",
        "results",
        "simulation_status",
        "logs",
    ):
        assert key in result, key
    assert result["task_id"] == ids["good"]
    assert result["worker_id"] == WORKER
    assert result["status"] == "completed"
    assert isinstance(result["execution_time_seconds"], int | float)
    assert result["execution_time_seconds"] >= 0
    assert isinstance(result["hardware_metrics"], dict)
    assert result["results"]["exit_code"] == 0
    assert result["simulation_status"]["is_simulated"] is False
    assert "hello-from-the-cli" in base64.b64decode(result["logs"]).decode()

    failed = cli.json("task", ids["bad"])
    assert failed["result"]["status"] == "failed"
    assert failed["result"]["results"]["exit_code"] == 3
    assert "failing" in base64.b64decode(failed["result"]["logs"]).decode()
    human = cli.ok("task", ids["bad"], "--logs")
    assert "failing" in human


def test_workers_json_shows_the_worker_and_its_hardware(cli):
    workers = cli.json("workers")["workers"]
    (worker,) = [w for w in workers if w["worker_id"] == WORKER]
    assert worker["connected"] is True
    assert worker["status"] == "connected"
    assert worker["slots"] == 2
    assert "cpu" in worker["hardware"]
    assert worker["capabilities"]["cpu"]["logical_cores"] >= 1
    # pytest is a dependency of testfleet: every worker takes test tasks.
    expected = ["command", "simulated", "test"]
    if benchmarks_available():  # torch and transformers installed: it runs benchmarks
        expected = ["benchmark", *expected]
    assert sorted(worker["task_types"]) == expected


def test_stats_json_counts_the_tasks(cli, finished):
    stats = cli.json("stats")
    assert stats["tasks"]["completed"] >= 1
    assert stats["tasks"]["failed"] >= 1
    assert stats["workers"]["connected"] == 1


def test_submitting_an_invalid_file_exits_non_zero_naming_the_field(cli):
    bad_file = cli.root / "bad.yaml"
    bad_file.write_text(
        textwrap.dedent(
            """\
            - task_id: cli-valid-neighbour
              type: simulated
            - task_id: cli-negative-timeout
              type: simulated
              timeout_seconds: -1
            """
        )
    )
    done = cli.run("submit", str(bad_file))
    assert done.returncode != 0
    assert "tasks[1].timeout_seconds" in done.stderr, done.stderr
    assert cli.run("task", "cli-valid-neighbour").returncode != 0  # nothing was accepted

    not_yaml = cli.root / "broken.yaml"
    not_yaml.write_text("- task_id: [unclosed\n")
    done = cli.run("submit", str(not_yaml))
    assert done.returncode != 0
    assert "broken.yaml" in done.stderr

    missing = cli.run("submit", str(cli.root / "missing.yaml"))
    assert missing.returncode != 0
    assert "no such file" in missing.stderr


def test_cancel_stops_a_running_task_and_its_process(cli):
    # Both of the worker's slots run a long task and a third task waits
    # behind them. Cancelling all three at once must stop the two and never
    # start the third in a slot the first cancel freed (it has side effects).
    pid_files = [cli.root / "long.pid", cli.root / "long-2.pid"]
    marker = cli.root / "queued-ran"
    script = (
        "import os, pathlib, sys, time\n"
        "pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))\n"
        "time.sleep(120)\n"
    )
    documents = [
        {
            "task_id": task_id,
            "type": "command",
            "config": {"argv": [sys.executable, "-c", script, str(pid_file)]},
            "timeout_seconds": 600,
        }
        for task_id, pid_file in zip(("cli-long", "cli-long-2"), pid_files, strict=True)
    ]
    documents.append(
        {
            "task_id": "cli-queued",
            "type": "command",
            "priority": 9,
            "config": {"argv": ["touch", str(marker)]},
        }
    )
    done = cli.run("submit", "-", "--json", stdin=json.dumps(documents))
    assert done.returncode == 0, done.stderr
    pids = []
    for pid_file in pid_files:
        cli.fleet.wait_until(pid_file.exists, 60, "the long tasks to start and write their pids")
        pids.append(int(cli.fleet.wait_until(pid_file.read_text, 10, "the pid to be written")))
    cli.fleet.extra_pids.update(pids)

    out = cli.ok("cancel", "cli-long", "cli-long-2", "cli-queued")
    assert out.splitlines() == [
        "cancelled cli-long",
        "cancelled cli-long-2",
        "cancelled cli-queued",
    ]
    detail = cli.json("task", "cli-long")
    assert detail["task"]["status"] == "cancelled"
    assert [a["status"] for a in detail["attempts"]] == ["cancelled"]
    queued = cli.json("task", "cli-queued")
    assert queued["task"]["status"] == "cancelled"
    assert queued["attempts"] == []
    for pid in pids:
        cli.fleet.wait_until(lambda pid=pid: not pid_alive(pid), 60, f"cancelled process {pid}")
    assert not marker.exists()

    # Cancelling it again says it has finished; an unknown id is an error too.
    again = cli.run("cancel", "cli-long")
    assert again.returncode != 0
    assert "already finished" in again.stderr
    # Issue 8: an id no task can have printed a KeyError traceback.
    for command in ("task", "cancel", "wait"):
        impossible = cli.run(command, "a/..")
        assert impossible.returncode == 2, (command, impossible.stderr)
        assert "no task can have the id 'a/..'" in impossible.stderr, command
        assert "Traceback" not in impossible.stderr
    unknown = cli.run("cancel", "cli-no-such-task")
    assert unknown.returncode != 0
    assert "cli-no-such-task" in unknown.stderr
    waited = cli.run("wait", "cli-long", "--timeout", "30")
    assert waited.returncode == 1


def test_tasks_lists_and_wait_gives_up_on_an_unschedulable_task(cli):
    document = {
        "task_id": "cli-needs-cuda",
        "type": "command",
        "requirements": {"hardware": ["cuda"]},
        "config": {"argv": ["true"]},
    }
    assert cli.run("submit", "-", stdin=json.dumps(document)).returncode == 0
    # Give up 1 s after the coordinator first says why; --timeout only bounds a bug.
    waited = cli.run(
        "wait", "cli-needs-cuda", "--unschedulable-timeout", "1", "--poll", "0.2", "--timeout", "60"
    )
    assert waited.returncode == 4, (waited.stdout, waited.stderr)
    reason = "hardware: needs one of [cuda]; connected workers offer [cpu]"
    assert f"cli-needs-cuda cannot run: {reason}" in waited.stderr
    assert re.search(
        rf"cli-needs-cuda has been unschedulable for \d+s: {re.escape(reason)}", waited.stderr
    )

    listed = cli.json("tasks", "--status", "unschedulable")
    assert [t["task_id"] for t in listed["tasks"]] == ["cli-needs-cuda"]
    assert listed["total"] == 1
    assert listed["tasks"][0]["unschedulable_reason"] == reason
    table = cli.ok("tasks", "--status", "unschedulable")
    assert "cli-needs-cuda" in table
    assert "unschedulable" in table
    detail = cli.ok("task", "cli-needs-cuda")
    assert "no attempts yet: it is unschedulable" in detail
    # queued still lists it; once cancelled it is no longer unschedulable.
    queued = cli.json("tasks", "--status", "queued")
    assert "cli-needs-cuda" in [t["task_id"] for t in queued["tasks"]]
    assert cli.run("cancel", "cli-needs-cuda").returncode == 0
    assert cli.json("tasks", "--status", "unschedulable")["total"] == 0


def test_a_second_coordinator_on_a_taken_port_names_the_first_and_says_nothing_else(cli):
    first = cli.fleet.processes["coordinator"].pid
    done = cli.run(
        "coordinator", "--db", str(cli.root / "other.duckdb"), "--port", str(cli.fleet.port)
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{cli.fleet.port}: the port is taken")
    assert f"process {first} (" in line
    assert "coordinator" in line
    assert "--port" in line
    assert "testfleet coordinator on" not in done.stderr
    assert not (cli.root / "other.duckdb").exists()  # nothing was opened either


def test_a_second_coordinator_on_the_same_file_names_the_first(cli):
    first = cli.fleet.processes["coordinator"].pid
    done = cli.run("coordinator", "--db", str(cli.fleet.db), "--port", str(free_port()))
    assert done.returncode == 2, (done.stdout, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        f"error: cannot open the database {str(cli.fleet.db)!r}: process {first} ("
    )
    assert "only one coordinator may own a database file" in line
    assert "--db" in line
    assert "testfleet coordinator on" not in done.stderr
    assert cli.fleet.client.health()["status"] == "ok"  # the first one is unharmed


def test_sql_queries_the_live_database_read_only(cli, finished):
    # Issue 8: the file cannot be opened while the coordinator runs; this is how.
    out = cli.ok("sql", "SELECT task_id, status FROM distributed_tasks WHERE task_id = 'cli-echo'")
    assert "cli-echo" in out
    assert "completed" in out
    answer = cli.json("sql", "SELECT count(*) AS n FROM task_results WHERE task_id = 'cli-echo'")
    assert answer["columns"] == [{"name": "n", "type": "BIGINT"}]
    assert answer["rows"] == [[1]]
    assert answer["truncated"] is False
    csv_out = cli.ok("sql", "SELECT 1 AS a, 'x' AS b", "--csv")
    assert csv_out.splitlines() == ["a,b", "1,x"]

    refused = cli.run("sql", "DROP TABLE task_results")
    assert refused.returncode == 2
    assert "this is DROP" in refused.stderr
    files = cli.run("sql", "SELECT * FROM read_text('/etc/hostname')")
    assert files.returncode == 2
    assert "disabled" in files.stderr
    # Nothing was dropped.
    assert cli.json("sql", "SELECT count(*) FROM task_results")["rows"][0][0] >= 1


def test_export_writes_parquet_files_of_the_tables(cli, finished):
    import pyarrow.parquet as pq

    out_dir = cli.root / "exported"
    printed = cli.ok("export", "distributed_tasks", "task_results", "--out", str(out_dir))
    assert "distributed_tasks.parquet" in printed
    tasks = pq.read_table(out_dir / "distributed_tasks.parquet")
    total = cli.json("sql", "SELECT count(*) FROM distributed_tasks")["rows"][0][0]
    assert tasks.num_rows == total
    assert "cli-echo" in tasks.column("task_id").to_pylist()
    assert pq.read_table(out_dir / "task_results.parquet").num_rows >= 1
    bogus = cli.run("export", "no_such_table", "--out", str(out_dir))
    assert bogus.returncode == 2
    assert "no_such_table" in bogus.stderr
