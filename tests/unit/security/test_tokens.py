"""API tokens: how they are made, stored, checked and found by clients."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from testfleet.cli.app import app
from testfleet.client import FleetClient, FleetError
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.credentials import (
    CredentialError,
    read_token_file,
    resolve_token,
    write_token_file,
)
from testfleet.security.tokens import (
    TOKEN_PREFIX,
    Role,
    TokenCheck,
    check_name,
    hash_secret,
    issue_token,
    parse_duration,
    token_id_of,
)
from testfleet.store import Store
from testfleet.testing import FakeClock


def test_a_token_is_random_recognisable_and_stored_only_as_a_hash() -> None:
    clock = FakeClock()
    one = issue_token("ci", Role.SUBMITTER, clock.now())
    two = issue_token("ci", Role.SUBMITTER, clock.now())
    assert one.secret != two.secret
    assert one.record.token_id != two.record.token_id
    assert one.secret.startswith(TOKEN_PREFIX)
    assert token_id_of(one.secret) == one.record.token_id
    assert one.record.secret_hash == hash_secret(one.secret)
    assert one.secret not in repr(one.record)
    assert len(one.secret.split("_", 2)[2]) == 43  # 32 random bytes, URL-safe base64


def test_the_check_says_why_a_secret_is_refused_on_a_fake_clock() -> None:
    clock = FakeClock()
    issued = issue_token("brief", Role.VIEWER, clock.now(), expires_in_seconds=60)
    record = issued.record
    assert record.check(issued.secret, clock.now()) is TokenCheck.VALID
    assert record.check(issued.secret[:-1] + "x", clock.now()) is TokenCheck.WRONG_SECRET
    clock.advance(59.999)
    assert record.check(issued.secret, clock.now()) is TokenCheck.VALID
    clock.advance(0.001)
    assert record.check(issued.secret, clock.now()) is TokenCheck.EXPIRED
    revoked = issue_token("gone", Role.ADMIN, clock.now())
    from dataclasses import replace

    gone = replace(revoked.record, revoked=clock.now())
    assert gone.check(revoked.secret, clock.now()) is TokenCheck.REVOKED


@pytest.mark.parametrize(
    "secret", ["", "tfk_", "tfk_tok-123_abc", "Bearer x", "tfk_tok-" + "g" * 16 + "_" + "A" * 43]
)
def test_junk_is_not_a_token(secret: str) -> None:
    assert token_id_of(secret) is None


def test_roles_include_the_ones_below() -> None:
    assert Role.ADMIN.includes(Role.SUBMITTER)
    assert Role.SUBMITTER.includes(Role.VIEWER)
    assert not Role.VIEWER.includes(Role.SUBMITTER)
    assert not Role.SUBMITTER.includes(Role.ADMIN)


def test_names_and_durations_are_checked() -> None:
    assert check_name("ci-bot@lab.example") == "ci-bot@lab.example"
    for bad in ("", "a b", "-x", "x" * 129, "é"):
        with pytest.raises(ValueError, match="token name"):
            check_name(bad)
    assert parse_duration("90d") == 90 * 86400
    assert parse_duration("12h") == 12 * 3600
    for bad in ("0d", "90", "d", "1y", "-1d"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    with pytest.raises(ValueError, match="positive"):
        issue_token("x", Role.VIEWER, 0.0, expires_in_seconds=0)


def test_a_token_written_into_the_file_is_read_back_by_the_store(tmp_path: Path) -> None:
    path = tmp_path / "fleet.duckdb"
    issued = create_token_in_file(path, "root", Role.ADMIN, now=1_800_000_000.0)
    with Store(path) as store:
        assert store.get_token(issued.record.token_id) == issued.record
        (event,) = store.audit_events()
        assert event.kind == "token_created"
        assert event.detail["token_id"] == issued.record.token_id
        assert store.revoke_token(issued.record.token_id, 1_800_000_100.0)
        assert store.revoke_token(issued.record.token_id, 1_800_000_200.0)  # the first stands
        token = store.get_token(issued.record.token_id)
        assert token is not None
        assert token.revoked == 1_800_000_100.0
        assert not store.revoke_token("tok-none", 0.0)
    assert issued.secret.encode() not in path.read_bytes()


def test_a_token_file_must_be_private(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "token", "tfk_secret")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_token_file(path) == "tfk_secret"
    path.chmod(0o644)
    with pytest.raises(CredentialError, match=rf"{path}.*chmod 600 {path}"):
        read_token_file(path)
    with pytest.raises(CredentialError, match="does not exist"):
        read_token_file(tmp_path / "missing")
    empty = write_token_file(tmp_path / "empty", "")
    with pytest.raises(CredentialError, match="empty"):
        read_token_file(empty)


def test_clients_take_the_argument_then_the_environment_then_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_token_file(tmp_path / "token", "from-file")
    monkeypatch.delenv("TESTFLEET_TOKEN", raising=False)
    monkeypatch.delenv("TESTFLEET_TOKEN_FILE", raising=False)
    assert resolve_token() is None
    assert resolve_token(token_file=path) == "from-file"
    monkeypatch.setenv("TESTFLEET_TOKEN", "from-env")
    assert resolve_token(token_file=path) == "from-env"
    assert resolve_token("given", path) == "given"


def test_a_client_with_a_readable_token_file_says_so_on_its_first_request(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "token", "tfk_x")
    path.chmod(0o640)
    client = FleetClient("http://127.0.0.1:9", token_file=path)
    with pytest.raises(FleetError, match="chmod 600"):
        client.workers()


def test_tokens_create_with_db_prints_the_secret_once_and_refuses_bad_input(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    db = tmp_path / "fleet.duckdb"
    done = runner.invoke(
        app, ["tokens", "create", "--db", str(db), "--role", "admin", "--name", "root"]
    )
    assert done.exit_code == 0, done.output
    (secret,) = [line for line in done.output.splitlines() if line.startswith(TOKEN_PREFIX)]
    with Store(db) as store:
        (token,) = store.list_tokens()
        assert token.name == "root"
        assert token.role is Role.ADMIN
        assert token.secret_hash == hash_secret(secret)
    bad = runner.invoke(
        app, ["tokens", "create", "--db", str(db), "--role", "admin", "--name", "a b"]
    )
    assert bad.exit_code == 2
    assert "token name" in bad.output
    bad = runner.invoke(
        app,
        [
            "tokens",
            "create",
            "--db",
            str(db),
            "--role",
            "viewer",
            "--name",
            "x",
            "--expires",
            "soon",
        ],
    )
    assert bad.exit_code == 2
    assert "--expires" in bad.output
    missing_dir = runner.invoke(
        app,
        [
            "tokens",
            "create",
            "--db",
            str(tmp_path / "no" / "f.duckdb"),
            "--role",
            "admin",
            "--name",
            "x",
        ],
    )
    assert missing_dir.exit_code == 2
    assert "does not exist" in missing_dir.output


def test_machine_roles_include_only_themselves() -> None:
    # A worker's or an enrolment credential reads nothing through the API,
    # and no API role (not even admin) opens the worker channel as a worker.
    for machine in (Role.WORKER, Role.ENROL):
        assert machine.binds_worker
        assert machine.includes(machine)
        for other in Role:
            if other is not machine:
                assert not machine.includes(other)
                assert not other.includes(machine)
    assert not any(role.binds_worker for role in (Role.VIEWER, Role.SUBMITTER, Role.ADMIN))


def test_a_worker_token_may_be_named_by_any_worker_id_starting_with_a_letter_or_digit() -> None:
    issued = issue_token("gpu-box:3@lab.example", Role.WORKER, 0.0)
    assert issued.record.name == "gpu-box:3@lab.example"
    issue_token("w" * 128, Role.WORKER, 0.0)
    with pytest.raises(ValueError, match="128"):
        issue_token("w" * 129, Role.WORKER, 0.0)
