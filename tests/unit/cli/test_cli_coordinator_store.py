"""``testfleet coordinator --store``: the bad combinations are one line each, exit 2,
no traceback, the DSN's password never shown (the choice itself:
``cli/coordinator_store.py``). Bad DSNs past the scheme (unreachable, wrong
credentials, newer schema) are the store's errors: ``tests/unit/store``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pg_cluster import PW_USER, PgCluster
from typer.testing import CliRunner

from testfleet.cli import app

DSN = "postgresql://fleet:hunter2@127.0.0.1:1/fleet"


def refused(*args: str, env: dict[str, str] | None = None) -> str:
    done = CliRunner().invoke(app, ["coordinator", "--port", "1", *args], env=env)
    assert "Traceback" not in done.output
    assert done.exit_code == 2, done.output
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert len(lines) == 1, done.output
    assert lines[0].startswith("error: ")
    assert "hunter2" not in done.output
    return lines[0]


def test_db_and_store_together_are_refused(tmp_path: Path) -> None:
    line = refused("--db", str(tmp_path / "f.duckdb"), "--store", DSN)
    assert "give one store" in line


def test_db_with_the_store_in_the_environment_is_refused(tmp_path: Path) -> None:
    line = refused("--db", str(tmp_path / "f.duckdb"), env={"TESTFLEET_STORE": DSN})
    assert "TESTFLEET_STORE" in line


@pytest.mark.parametrize("spec", ["mysql://u:hunter2@h/db", "fleet.duckdb"])
def test_a_store_that_is_not_postgresql_is_refused(spec: str) -> None:
    line = refused("--store", spec)
    assert "postgresql://" in line
    assert "--db FILE" in line


def test_a_database_key_with_a_store_is_refused() -> None:
    line = refused("--store", DSN, env={"TESTFLEET_DB_KEY": "0" * 64})
    assert "encrypt" in line


def test_backups_with_a_store_are_refused(tmp_path: Path) -> None:
    line = refused("--store", DSN, "--backup-dir", str(tmp_path / "b"))
    assert "pg_dump" in line


def started(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(app, ["coordinator", "--port", "0", *args])
    assert "Traceback" not in done.output
    return done.exit_code, done.output


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    code, output = started("--store", DSN)
    assert code == 2
    assert "error: cannot connect to PostgreSQL at postgresql://fleet:***@127.0.0.1:1/fleet" in (
        output
    )
    assert "hunter2" not in output


def test_wrong_credentials_are_one_line_without_the_password(pg_cluster: PgCluster) -> None:
    dsn = pg_cluster.dsn("postgres", user=PW_USER, password="wrong-one")
    code, output = started("--store", dsn)
    assert code == 2
    assert output.startswith("error: ")
    assert "wrong-one" not in output
    assert PW_USER in output
