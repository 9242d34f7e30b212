"""The coordinator's start-up checks: the port and the database, named before serving.

Real sockets and a real DuckDB lock held by a child process; the integration
tests in ``test_it_cli.py`` do the same through ``testfleet coordinator``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from testfleet.coordinator.startup import StartupError, bind_listeners, database_failure
from testfleet.store import Store, StoreError

HOLD_OPEN = (
    "import sys, duckdb\n"
    "connection = duckdb.connect(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


def test_a_taken_port_names_the_listening_process_and_a_free_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError) as raised:
            bind_listeners("127.0.0.1", port)
    message = str(raised.value)
    assert message.startswith(f"cannot listen on 127.0.0.1:{port}: the port is taken by ")
    assert f"process {os.getpid()} (" in message  # this test's own process
    assert "pick another with --port" in message


def test_the_bound_sockets_already_listen() -> None:
    listeners = bind_listeners("127.0.0.1", 0)
    try:
        port = listeners[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # accepted into the backlog: nobody can take the port any more
        with pytest.raises(StartupError, match="the port is taken"):
            bind_listeners("127.0.0.1", port)
    finally:
        for listener in listeners:
            listener.close()


def test_an_address_not_on_this_machine_says_what_to_use() -> None:
    with pytest.raises(
        StartupError, match=r"not an address of this machine; use --host 0\.0\.0\.0"
    ):
        bind_listeners("192.0.2.123", 0)  # TEST-NET-1: never assigned


def test_a_locked_database_names_the_process_holding_it(tmp_path: Path) -> None:
    path = tmp_path / "fleet.duckdb"
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"
        try:
            with pytest.raises(StoreError) as raised:
                Store(path)
            message = database_failure(path, raised.value)
        finally:
            holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert message.startswith(f"cannot open the database {str(path)!r}: process {holder.pid} (")
    assert "duckdb.connect" in message  # its command line, on one line
    assert "only one coordinator may own a database file" in message
    assert "\n" not in message
