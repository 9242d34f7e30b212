"""What a worker takes, and what a task carries and shows, with real processes.

One coordinator; a worker started with ``--allow-types simulated,test`` (so
never ``command``), and later one that takes everything, started with
testfleet credential variables in its environment. Checked end to end:

- a ``command`` task waits with a reason naming ``--allow-types`` while only
  the refusing worker is connected, and runs once the other joins;
- the task's child sees its own ``env`` but none of the worker's credentials;
- ``GET /api/v1/tasks`` and ``testfleet task --json`` show ``env``'s names
  with every value redacted to a viewer, and the values to an admin;
- ``testfleet task``/``tasks``/``task --logs`` print argv and output that
  hold terminal escapes without a raw ESC or BEL byte.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet

from testfleet.client import FleetClient
from testfleet.local_fleet import WorkerOptions

pytestmark = [pytest.mark.integration]

NASTY = "\x1b]0;pwned\x07\x1b[2J"
SECRET = "tf-worker-credential-value"
TASK_SECRET = "task-own-secret-value"
#: Prints the task's own variable, then any testfleet credential it inherited,
#: then argv[1] (escapes and all) to its output.
SCRIPT = (
    "import os, sys; print(os.environ['TASK_VALUE']);"
    "print(sorted(k for k in os.environ if k.endswith(('_KEY', '_SECRET'))));"
    "print(sys.argv[1])"
)


def cli(
    fleet: Fleet, *args: str, stdin: str | None = None, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``testfleet ARGS`` with the fleet's admin token, or ``token``."""
    env = fleet.env() if token is None else {**fleet.env(), "TESTFLEET_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "testfleet", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )


def ok(fleet: Fleet, *args: str, stdin: str | None = None, token: str | None = None) -> str:
    done = cli(fleet, *args, stdin=stdin, token=token)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert "\x1b" not in done.stdout + done.stderr, args
    assert "\x07" not in done.stdout + done.stderr, args
    return done.stdout


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(Path(tmp_path_factory.mktemp("safety")))
    try:
        fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
        fleet.start_worker("locked", WorkerOptions(extra_args=["--allow-types", "simulated,test"]))
        yield fleet
    finally:
        fleet.close()


def test_a_command_task_waits_for_a_worker_that_takes_commands_and_shows_nothing_raw(
    fleet: Fleet,
) -> None:
    task = {
        "task_id": "nasty-cmd",
        "type": "command",
        "timeout_seconds": 60,
        "config": {
            "argv": [sys.executable, "-c", SCRIPT, NASTY],
            "env": {"TASK_VALUE": TASK_SECRET},
        },
    }
    ok(fleet, "submit", "-", stdin=json.dumps(task))

    client = fleet.client
    waiting = fleet.wait_until(
        lambda: client.get_task("nasty-cmd")["task"].get("unschedulable_reason"),
        what="the command task to be unschedulable",
    )
    assert "--allow-types" in waiting
    assert "'command'" in waiting

    # To a viewer, the listing and the detail keep env's names, never its values.
    viewer = client.create_token("safety-viewer", "viewer")["secret"]
    with FleetClient(fleet.url, token=viewer, ca=fleet.env().get("TESTFLEET_CA")) as as_viewer:
        listed = as_viewer.list_tasks()["tasks"]
    shown = next(t for t in listed if t["task_id"] == "nasty-cmd")
    assert shown["config"]["env"] == {"TASK_VALUE": "***"}
    detail = json.loads(ok(fleet, "task", "nasty-cmd", "--json", token=viewer))
    assert detail["task"]["config"]["env"] == {"TASK_VALUE": "***"}
    assert TASK_SECRET not in json.dumps(detail)
    # An admin (the fleet's token) sees the values.
    revealed = json.loads(ok(fleet, "task", "nasty-cmd", "--json"))
    assert revealed["task"]["config"]["env"] == {"TASK_VALUE": TASK_SECRET}
    ok(fleet, "task", "nasty-cmd")
    ok(fleet, "tasks")

    fleet.start_worker(
        "open",
        WorkerOptions(env={"TESTFLEET_DB_KEY": SECRET, "TESTFLEET_PROBE_SECRET": SECRET}),
    )
    finished = fleet.wait_until(
        lambda: (t := client.get_task("nasty-cmd"))["task"]["status"] == "completed" and t,
        what="the command task to complete on the worker that takes commands",
    )
    assert finished["task"]["worker_id"] == "open"
    output = finished["result"]["results"]["output_tail"].splitlines()
    assert output[0] == TASK_SECRET  # the worker got the real env
    assert output[1] == "[]"  # and none of its own credentials
    assert SECRET not in finished["result"]["results"]["output_tail"]

    for args in (["task", "nasty-cmd"], ["task", "nasty-cmd", "--logs"], ["tasks"]):
        ok(fleet, *args)
    logs = ok(fleet, "task", "nasty-cmd", "--logs")
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in logs


def test_a_bad_allow_types_stops_the_worker_with_one_line(fleet: Fleet) -> None:
    done = cli(fleet, "worker", "--allow-types", "test,shell")
    assert done.returncode == 2
    assert "unknown task type 'shell'" in done.stderr
    assert "valid: command, simulated, test, benchmark" in done.stderr
    assert "Traceback" not in done.stderr
