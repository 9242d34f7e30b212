"""Enrolment tokens: short lives, and one use each, even under two concurrent uses."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from testfleet.cli.app import app
from testfleet.security.audit import AuditEvent, AuditKind, AuditOutcome
from testfleet.security.enrolment import (
    DEFAULT_ENROL_SECONDS,
    MAX_ENROL_SECONDS,
    TokenConsumption,
    token_lifetime,
)
from testfleet.security.tokens import Role, issue_token
from testfleet.store import Store

T0 = 1_800_000_000.0


def enrolled_event(worker_id: str) -> AuditEvent:
    return AuditEvent(
        time=T0, kind=AuditKind.WORKER_ENROLLED, outcome=AuditOutcome.ALLOWED, actor=worker_id
    )


def test_an_enrol_token_lives_an_hour_by_default_and_a_week_at_most() -> None:
    assert token_lifetime(Role.ENROL, None) == DEFAULT_ENROL_SECONDS == 3600
    assert token_lifetime(Role.ENROL, 600) == 600
    assert token_lifetime(Role.ENROL, MAX_ENROL_SECONDS) == MAX_ENROL_SECONDS
    with pytest.raises(ValueError, match="at most 7 days"):
        token_lifetime(Role.ENROL, MAX_ENROL_SECONDS + 1)
    # Other roles get what they ask, "until revoked" included.
    assert token_lifetime(Role.VIEWER, None) is None
    assert token_lifetime(Role.WORKER, 30 * 86400) == 30 * 86400


def test_a_token_is_consumed_once_and_its_audit_event_written_with_it(tmp_path: Path) -> None:
    issued = issue_token("w1", Role.ENROL, T0, expires_in_seconds=3600)
    token_id = issued.record.token_id
    with Store(tmp_path / "t.duckdb") as store:
        store.add_token(issued.record)
        first = store.consume_token(token_id, Role.ENROL, T0 + 1, [enrolled_event("w1")])
        again = store.consume_token(token_id, Role.ENROL, T0 + 2, [enrolled_event("w1")])
        assert (first, again) == (TokenConsumption.CONSUMED, TokenConsumption.ALREADY_USED)
        token = store.get_token(token_id)
        assert token is not None
        assert token.revoked == pytest.approx(T0 + 1)  # used: revoked from then on
        kinds = [e.kind for e in store.audit_events()]
        assert kinds == [AuditKind.WORKER_ENROLLED]  # the refused second use wrote none


def test_an_expired_unknown_or_other_role_token_is_not_consumed(tmp_path: Path) -> None:
    brief = issue_token("w1", Role.ENROL, T0, expires_in_seconds=60)
    viewer = issue_token("v", Role.VIEWER, T0)
    with Store(tmp_path / "t.duckdb") as store:
        store.add_token(brief.record)
        store.add_token(viewer.record)
        assert (
            store.consume_token(brief.record.token_id, Role.ENROL, T0 + 60)
            is TokenConsumption.EXPIRED
        )
        assert store.consume_token("tok-nope", Role.ENROL, T0) is TokenConsumption.UNKNOWN
        assert (
            store.consume_token(viewer.record.token_id, Role.ENROL, T0) is TokenConsumption.UNKNOWN
        )
        assert all(t.revoked is None for t in store.list_tokens())
        assert store.audit_events() == []


def race(store: Store, token_id: str) -> list[TokenConsumption]:
    """Two threads use ``token_id`` at the same moment; what each found."""
    start = threading.Barrier(2)
    verdicts: list[TokenConsumption] = []

    def use() -> None:
        start.wait()
        verdicts.append(store.consume_token(token_id, Role.ENROL, T0 + 1))

    threads = [threading.Thread(target=use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return verdicts


def test_of_two_concurrent_uses_of_one_token_exactly_one_succeeds(tmp_path: Path) -> None:
    with Store(tmp_path / "t.duckdb") as store:
        for round_ in range(20):
            issued = issue_token(f"w{round_}", Role.ENROL, T0, expires_in_seconds=3600)
            store.add_token(issued.record)
            assert sorted(race(store, issued.record.token_id)) == [
                TokenConsumption.ALREADY_USED,
                TokenConsumption.CONSUMED,
            ], round_


def test_tokens_create_db_gives_an_enrol_token_an_hour_and_says_how_to_use_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "fleet.duckdb"
    runner = CliRunner()
    made = runner.invoke(
        app, ["tokens", "create", "--db", str(db), "--role", "enrol", "--name", "gpu-7"]
    )
    assert made.exit_code == 0, made.output
    assert "--enrol-token" in made.stdout
    assert "--cert-dir" in made.stdout
    with Store(db) as store:
        (token,) = store.list_tokens()
    assert token.role is Role.ENROL
    assert token.expires is not None
    assert token.expires - token.created == pytest.approx(DEFAULT_ENROL_SECONDS)

    too_long = runner.invoke(
        app,
        ["tokens", "create", "--db", str(db), "--role", "enrol", "--name", "g", "--expires", "8d"],
    )
    assert too_long.exit_code == 2
    assert "--expires" in too_long.stderr
    assert "at most 7 days" in too_long.stderr
    assert len(too_long.stderr.strip().splitlines()) == 1
    assert "Traceback" not in too_long.output
