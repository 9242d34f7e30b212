"""A real coordinator process with ``--db-key-file``: what it writes is unreadable
without the key, comes back whole with it, and every wrong start is one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet

from testfleet.local_fleet import CoordinatorOptions
from testfleet.store import Store
from testfleet.store.encryption import DatabaseKey

pytestmark = pytest.mark.integration

SECRET = "integration-key-0123456789abcdef"
TASK_ID = "it-encrypted-task-5d1c9e0a"


def _options() -> CoordinatorOptions:
    return CoordinatorOptions(
        heartbeat_interval=0.2, heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT, log_level="info"
    )


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "db.key"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def _start_failing(fleet: Fleet, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a coordinator that must refuse to start; return what it printed."""
    argv = [sys.executable, "-m", "testfleet", "coordinator", "--db", str(fleet.db)]
    argv += ["--port", str(fleet.port), *args]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env={**fleet.env(), **(env or {})},
        check=False,
    )
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "testfleet coordinator on" not in done.stderr, "announced an address it cannot serve"
    return done.stderr


def test_an_encrypted_coordinator_writes_no_task_id_and_reads_it_back(
    fleet: Fleet, tmp_path: Path
) -> None:
    # The fleet writes its admin token into the file with the key too.
    fleet.db_key_file = _key_file(tmp_path)
    fleet.start_coordinator(_options())
    fleet.client.submit([{"task_id": TASK_ID, "type": "simulated", "config": {}}])
    # While it runs, the batch is in the WAL; both files are searched.
    raw = {p.name: p.read_bytes() for p in tmp_path.glob("fleet.duckdb*")}
    assert set(raw) >= {"fleet.duckdb"}
    fleet.stop("coordinator")
    raw.update({p.name: p.read_bytes() for p in tmp_path.glob("fleet.duckdb*")})
    assert [name for name, data in raw.items() if TASK_ID.encode() in data] == []

    # Restarted with the key, the task is there.
    fleet.start_coordinator(_options())
    assert TASK_ID in str(fleet.task(TASK_ID))
    fleet.stop("coordinator")
    with Store(fleet.db, encryption_key=DatabaseKey(SECRET, "test")) as store:
        assert TASK_ID in store.all_task_ids()

    # Without it, one line naming the file and the flag.
    said = _start_failing(fleet)
    assert "is encrypted; give its key with --db-key-file" in said
    assert str(fleet.db) in said
    # The key may come from the environment instead (and a wrong one is named).
    said = _start_failing(fleet, env={"TESTFLEET_DB_KEY": "a-wrong-key-0123456789abcdef"})
    assert "TESTFLEET_DB_KEY does not decrypt it" in said


def test_a_group_readable_key_file_is_refused_before_anything_starts(
    fleet: Fleet, tmp_path: Path
) -> None:
    key_file = _key_file(tmp_path)
    key_file.chmod(0o640)
    said = _start_failing(fleet, "--db-key-file", str(key_file))
    assert f"chmod 600 {key_file}" in said
    assert not fleet.db.exists()
