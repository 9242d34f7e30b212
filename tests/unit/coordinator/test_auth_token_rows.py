"""How long the token check keeps a token's row (``coordinator/auth.py``).

A row read from the store is kept for ``row_seconds`` on the injected clock,
then read again; a revoke through this coordinator drops it at once, and a
revoke made elsewhere (another coordinator on the same PostgreSQL database)
takes effect here once the kept row is due. A fake store counts the reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import pytest
from fastapi.security import HTTPAuthorizationCredentials
from starlette.requests import Request

from testfleet.coordinator.auth import TOKEN_ROW_SECONDS, Auth
from testfleet.security.audit import AuditEvent
from testfleet.security.tokens import Role, TokenCheck, TokenRecord, issue_token
from testfleet.testing import FakeClock

TTL = 5.0


class CountingTokenStore:
    """The two token methods ``Auth`` uses here, counting reads of a row."""

    def __init__(self) -> None:
        self.rows: dict[str, TokenRecord] = {}
        self.reads = 0
        self.audit: list[AuditEvent] = []

    def get_token(self, token_id: str) -> TokenRecord | None:
        self.reads += 1
        return self.rows.get(token_id)

    def revoke_token(self, token_id: str, now: float, audit: Sequence[AuditEvent] = ()) -> bool:
        if token_id not in self.rows:
            return False
        self.rows[token_id] = replace(self.rows[token_id], revoked=now)
        self.audit.extend(audit)
        return True

    def record_audit(self, events: Sequence[AuditEvent]) -> None:
        self.audit.extend(events)


def request() -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/api/v1/tasks",
            "headers": [],
            "client": ("127.0.0.1", 4000),
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> CountingTokenStore:
    return CountingTokenStore()


def issue(store: CountingTokenStore, clock: FakeClock) -> tuple[str, str]:
    issued = issue_token("ci", Role.SUBMITTER, clock.now())
    store.rows[issued.record.token_id] = issued.record
    return issued.record.token_id, issued.secret


def verdict(auth: Auth, secret: str) -> TokenCheck:
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=secret)
    return asyncio.run(auth.identify(request(), credentials))[1]


def test_a_kept_row_answers_without_a_store_read_until_it_is_due(
    store: CountingTokenStore, clock: FakeClock
) -> None:
    _, secret = issue(store, clock)
    auth = Auth(store, clock, row_seconds=TTL)  # type: ignore[arg-type]
    assert verdict(auth, secret) is TokenCheck.VALID
    assert verdict(auth, secret) is TokenCheck.VALID
    clock.advance(TTL - 0.001)
    assert verdict(auth, secret) is TokenCheck.VALID
    assert store.reads == 1
    clock.advance(0.001)
    assert verdict(auth, secret) is TokenCheck.VALID
    assert store.reads == 2


def test_a_revoke_made_elsewhere_takes_effect_once_the_kept_row_is_due(
    store: CountingTokenStore, clock: FakeClock
) -> None:
    token_id, secret = issue(store, clock)
    auth = Auth(store, clock, row_seconds=TTL)  # type: ignore[arg-type]
    assert verdict(auth, secret) is TokenCheck.VALID
    # Another coordinator on the same database revokes it: not seen here yet...
    store.rows[token_id] = replace(store.rows[token_id], revoked=clock.now())
    assert verdict(auth, secret) is TokenCheck.VALID
    # ...but within the bound.
    clock.advance(TTL)
    assert verdict(auth, secret) is TokenCheck.REVOKED
    assert not auth.knows(token_id)
    assert verdict(auth, secret) is TokenCheck.REVOKED


def test_a_revoke_through_this_coordinator_is_refused_on_the_next_request(
    store: CountingTokenStore, clock: FakeClock
) -> None:
    token_id, secret = issue(store, clock)
    auth = Auth(store, clock, row_seconds=TTL)  # type: ignore[arg-type]
    assert verdict(auth, secret) is TokenCheck.VALID
    assert auth.knows(token_id)
    revoked = asyncio.run(auth.revoke(token_id, []))
    assert revoked is not None
    assert revoked.revoked is not None
    assert verdict(auth, secret) is TokenCheck.REVOKED  # no clock advance needed


def test_unknown_and_wrong_secrets_are_not_kept(
    store: CountingTokenStore, clock: FakeClock
) -> None:
    _, secret = issue(store, clock)
    auth = Auth(store, clock, row_seconds=TTL)  # type: ignore[arg-type]
    assert verdict(auth, "tfk_tok-0000000000000000_nope") in (
        TokenCheck.UNKNOWN,
        TokenCheck.MALFORMED,
    )
    assert verdict(auth, secret[:-2] + "xx") is TokenCheck.WRONG_SECRET
    assert verdict(auth, secret) is TokenCheck.VALID


def test_the_default_bound_is_short() -> None:
    assert 0 < TOKEN_ROW_SECONDS <= 10
