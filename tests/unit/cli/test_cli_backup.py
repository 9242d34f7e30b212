"""``testfleet backup``, ``testfleet restore`` and the coordinator's backup options: each
refusal one line naming the flag and the fix, exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.domain.enums import TaskStatus
from testfleet.domain.records import TaskRecord, WriteBatch
from testfleet.domain.task import TaskSpec
from testfleet.store import Store


def run(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(app, list(args))
    assert "Traceback" not in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    # Messages wrap at the terminal's width, and they quote paths whose length
    # depends on where the test runs: compare with the line breaks taken out.
    return done.exit_code, " ".join(done.output.split())


def snapshot(tmp_path: Path) -> Path:
    """A file as `testfleet backup` writes one (a store's snapshot)."""
    (tmp_path / "snaps").mkdir()
    spec = TaskSpec.model_validate({"task_id": "a", "type": "simulated"})
    with Store(tmp_path / "fleet.duckdb", snapshot_dir=tmp_path / "snaps") as store:
        store.write(
            WriteBatch(tasks=[TaskRecord(spec, TaskStatus.QUEUED, create_time=1.0, queued_at=1.0)])
        )
        return store.snapshot("s.duckdb").path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backup-every", "1h"], "--backup-every needs --backup-dir"),
        (
            ["--backup-every", "soon", "--backup-dir", "b"],
            "--backup-every: 'soon' is not a duration",
        ),
        (["--backup-every", "1h", "--backup-dir", "file.txt"], "exists and is not a directory"),
    ],
)
def test_coordinator_backup_options_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    code, output = run("coordinator", "--db", str(tmp_path / "f.duckdb"), "--port", "1", *args)
    assert code == 2
    assert message in output


def test_backup_refuses_an_existing_file_before_asking(tmp_path: Path) -> None:
    (tmp_path / "there.duckdb").write_bytes(b"x")
    code, output = run("backup", "--to", str(tmp_path / "there.duckdb"), "-c", "http://127.0.0.1:1")
    assert code == 2
    assert "--force" in output


def test_restore_writes_a_checked_database_and_refuses_to_overwrite(tmp_path: Path) -> None:
    source = snapshot(tmp_path)
    code, output = run("restore", str(source), "--db", str(tmp_path / "new.duckdb"))
    assert code == 0, output
    assert "1 tasks" in output
    assert "checks passed" in output
    code, output = run("restore", str(source), "--db", str(tmp_path / "new.duckdb"))
    assert code == 2
    assert "--force" in output
    code, output = run("restore", str(source), "--db", str(tmp_path / "new.duckdb"), "--force")
    assert code == 0, output


def test_restore_of_something_else_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database")
    code, output = run("restore", str(tmp_path / "notes.txt"), "--db", str(tmp_path / "n.duckdb"))
    assert code == 2
    assert output.startswith("error: ")
    assert not (tmp_path / "n.duckdb").exists()
