"""Opening files: another process holding the lock, and files that are not databases.

DuckDB lets one process open a file for writing; the store must say so
clearly, naming the file and the likely culprit (a running coordinator).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testfleet.store import Store, StoreError

HOLD_OPEN = (
    "import sys, duckdb\n"
    "connection = duckdb.connect(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)

TRY_STORE = (
    "import sys\n"
    "from testfleet.store import Store, StoreError\n"
    "try:\n"
    "    Store(sys.argv[1])\n"
    "except StoreError as error:\n"
    "    print(error)\n"
    "    sys.exit(3)\n"
)


def test_a_file_held_by_another_process_gives_a_clear_error(tmp_path: Path) -> None:
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
        finally:
            holder.stdin.close()
        assert holder.wait(timeout=60) == 0

    message = str(raised.value)
    assert str(path) in message
    assert "another process holds its lock" in message
    assert "coordinator probably has it open" in message
    # Once the other process has gone, the file opens.
    Store(path).close()


def test_a_second_process_cannot_open_a_file_the_store_has_open(tmp_path: Path) -> None:
    path = tmp_path / "fleet.duckdb"
    with Store(path):
        other = subprocess.run(
            [sys.executable, "-c", TRY_STORE, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert other.returncode == 3, other.stderr
    assert str(path) in other.stdout
    assert "coordinator probably has it open" in other.stdout


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the tables you are looking for\n" * 200)
    with pytest.raises(StoreError, match="cannot open the database file") as raised:
        Store(path)
    assert str(path) in str(raised.value)


def test_a_missing_directory_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "fleet.duckdb"
    with pytest.raises(StoreError, match="cannot open the database file"):
        Store(path)
