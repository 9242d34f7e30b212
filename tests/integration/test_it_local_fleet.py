"""``LocalFleet`` itself: real processes on loopback, started, awaited and ended.

The other integration modules use it through ``it_fleet.Fleet``; these tests
pin what they rely on: options reach the command line, waiting fails early
with the log when a process dies, a stop is clean when it can be and kills
the whole process group when it cannot, and nothing outlives the fleet.
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest
from it_fleet import pid_alive

from testfleet.client import COORDINATOR_ENV
from testfleet.coordinator.startup import free_port
from testfleet.local_fleet import (
    COORDINATOR,
    CoordinatorOptions,
    IgnoredSigterm,
    LocalFleet,
    ProcessExited,
    WaitTimeout,
    WorkerOptions,
)
from testfleet.store import Store

pytestmark = [pytest.mark.integration]

#: How a coordinator exits after a clean shutdown on SIGTERM: it commits what
#: is in flight and exits 0 (uvicorn's re-raise of the signal is caught: README
#: "Failure detection", coordinator SIGTERM).
CLEAN_COORDINATOR_EXIT = 0

#: Ignores SIGTERM, starts a child (in its process group) that sleeps, writes
#: the child's pid and sleeps too: only a SIGKILL of the group ends both.
STUBBORN = """
import pathlib, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
pathlib.Path(sys.argv[1]).write_text(str(child.pid))
time.sleep(600)
"""


def test_free_port_can_be_listened_on() -> None:
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()


@pytest.mark.timeout(120)
def test_a_fleet_starts_with_its_options_and_stops_cleanly(tmp_path: Path) -> None:
    with LocalFleet(tmp_path) as fleet:
        fleet.start_coordinator(CoordinatorOptions(heartbeat_interval=0.5, heartbeat_timeout=10))
        fleet.start_worker("lf-a", WorkerOptions(slots=3, tags={"rack": "x"}), wait=False)
        fleet.start_worker("lf-b", name="second", wait=False)
        fleet.wait_for_workers(["lf-a", "lf-b"])
        fleet.wait_for_workers(count=2)
        workers = {w["worker_id"]: w for w in fleet.client.workers()}
        assert workers["lf-a"]["slots"] == 3
        assert workers["lf-a"]["tags"] == {"rack": "x"}
        assert workers["lf-b"]["slots"] == 1
        assert set(fleet.processes) == {COORDINATOR, "lf-a", "second"}
        assert fleet.env()[COORDINATOR_ENV] == fleet.url
        processes = dict(fleet.processes)
    # The context manager stopped everything with SIGTERM: clean exits, 0 each.
    assert {name: p.returncode for name, p in processes.items()} == {
        COORDINATOR: CLEAN_COORDINATOR_EXIT,
        "lf-a": 0,
        "second": 0,
    }
    for name in processes:
        log = tmp_path / "logs" / f"{name}.log"
        assert log.read_text().startswith("=== start #"), log
    assert "--worker-id lf-b" in (tmp_path / "logs" / "second.log").read_text()
    assert (
        f"--work-dir {tmp_path / 'work' / 'lf-a'} " in (tmp_path / "logs" / "lf-a.log").read_text()
    )
    with Store(tmp_path / "fleet.duckdb") as store:  # the file is free again
        assert {w.worker_id for w in store.list_workers()} == {"lf-a", "lf-b"}


@pytest.mark.timeout(120)
def test_a_restarted_coordinator_keeps_its_port_and_appends_to_its_log(tmp_path: Path) -> None:
    with LocalFleet(tmp_path) as fleet:
        fleet.start_coordinator()
        port = fleet.port
        assert fleet.stop(COORDINATOR, strict=True) == CLEAN_COORDINATOR_EXIT
        fleet.start_coordinator()
        assert fleet.port == port
        assert fleet.client.health()["status"] == "ok"
    assert fleet.tail(COORDINATOR).count("=== start #") == 2


@pytest.mark.timeout(120)
def test_a_worker_that_exits_fails_the_wait_quoting_its_log(tmp_path: Path) -> None:
    with LocalFleet(tmp_path) as fleet:
        fleet.start_coordinator()
        with pytest.raises(ProcessExited) as exited:
            fleet.start_worker("bad", WorkerOptions(extra_args=["--no-such-option"]))
        assert "bad exited with 2" in str(exited.value)
        assert "No such option" in str(exited.value)


@pytest.mark.timeout(120)
def test_a_coordinator_that_cannot_start_fails_the_wait_quoting_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        fleet = LocalFleet(tmp_path, port=taken.getsockname()[1])
        with fleet, pytest.raises(ProcessExited, match="the port is taken"):
            fleet.start_coordinator()


@pytest.mark.timeout(60)
def test_waiting_gives_up_saying_what_it_waited_for(tmp_path: Path) -> None:
    fleet = LocalFleet(tmp_path)
    with pytest.raises(WaitTimeout, match=r"timed out after 0\.3 s waiting for nothing"):
        fleet.wait_until(lambda: False, 0.3, "nothing", poll=0.05)


@pytest.mark.timeout(120)
def test_a_process_that_ignores_sigterm_is_killed_with_its_group(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    fleet = LocalFleet(tmp_path)
    try:
        process = fleet.start("stubborn", [sys.executable, "-c", STUBBORN, str(child_pid_file)])
        fleet.wait_until(lambda: child_pid_file.exists() and child_pid_file.read_text(), 30)
        child = int(child_pid_file.read_text())
        with pytest.raises(IgnoredSigterm, match="stubborn"):
            fleet.stop("stubborn", grace=0.5, strict=True)
        assert process.returncode == -signal.SIGKILL
        fleet.wait_until(lambda: not pid_alive(child), 30, "the child to die with its group")
    finally:
        fleet.close()


@pytest.mark.timeout(120)
def test_close_ends_what_a_leader_left_behind(tmp_path: Path) -> None:
    """A worker SIGKILLed alone leaves its children; closing the fleet ends them."""
    child_pid_file = tmp_path / "child.pid"
    fleet = LocalFleet(tmp_path)
    try:
        process = fleet.start("leader", [sys.executable, "-c", STUBBORN, str(child_pid_file)])
        fleet.wait_until(lambda: child_pid_file.exists() and child_pid_file.read_text(), 30)
        child = int(child_pid_file.read_text())
        fleet.send_signal(process, signal.SIGKILL)
        assert process.returncode == -signal.SIGKILL
        assert pid_alive(child)
    finally:
        fleet.close()
    fleet.wait_until(lambda: not pid_alive(child), 30, "the orphaned child to be killed")
