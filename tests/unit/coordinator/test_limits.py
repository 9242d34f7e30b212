"""The rate limiter on a fake clock: burst, refill, Retry-After, exemptions; keys by
credential or address, a bounded number of them, and one audit event per key a minute."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from testfleet.coordinator.limits import (
    HEALTH_PATH,
    RateLimiter,
    RateLimitMiddleware,
    TokenBucket,
    rate_key,
)
from testfleet.security.audit import AuditEvent, AuditKind, AuditOutcome
from testfleet.security.tokens import token_id_of
from testfleet.store import StoreError
from testfleet.testing import FakeClock


def test_a_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.5  # one token takes half a second at 2/s
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) > 0.0
    assert bucket.full(10.0)


def test_each_client_has_its_own_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, rate=1.0, burst=2)
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == 1.0
    assert limiter.take("b") == 0.0
    clock.advance(1.0)
    assert limiter.take("a") == 0.0


def test_rate_key_is_the_client_address() -> None:
    assert rate_key({"client": ("10.0.0.7", 5555)}) == "10.0.0.7"
    assert rate_key({}) == "unknown"


def _app(clock: FakeClock) -> TestClient:
    inner = FastAPI()

    @inner.get("/api/v1/things")
    def things() -> dict[str, str]:
        return {"ok": "yes"}

    @inner.get(HEALTH_PATH)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    inner.add_middleware(RateLimitMiddleware, limiter=RateLimiter(clock, rate=0.5, burst=2))
    return TestClient(inner)


def test_past_the_burst_a_client_gets_429_with_retry_after_and_health_never() -> None:
    clock = FakeClock()
    client = _app(clock)
    assert [client.get("/api/v1/things").status_code for _ in range(2)] == [200, 200]
    refused = client.get("/api/v1/things")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["Retry-After"] == "2"  # one token at 0.5/s
    assert all(client.get(HEALTH_PATH).status_code == 200 for _ in range(10))
    clock.advance(2.0)
    assert client.get("/api/v1/things").status_code == 200


# ------------------------------------------------- keyed by credential (issue 10)


def made_up_secret() -> str:
    """A well-formed secret no coordinator issued (anyone can write one)."""
    return f"tfk_tok-{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


def scope_with(authorization: str | None, address: str = "10.0.0.7") -> dict[str, Any]:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return {"client": (address, 5555), "headers": headers}


def test_rate_key_is_the_token_id_of_a_well_formed_bearer_token() -> None:
    secret = made_up_secret()
    assert rate_key(scope_with(f"Bearer {secret}")) == token_id_of(secret)
    assert rate_key(scope_with(f"bearer {secret}")) == token_id_of(secret)


def test_rate_key_falls_back_to_the_address_for_junk_or_other_schemes() -> None:
    secret = made_up_secret()
    for authorization in (None, "Bearer junk", f"Basic {secret}", "Bearer", f"Bearer {secret}x"):
        assert rate_key(scope_with(authorization)) == "10.0.0.7", authorization


def test_a_token_the_coordinator_does_not_know_counts_against_the_address() -> None:
    known, unknown = made_up_secret(), made_up_secret()
    is_known = {token_id_of(known)}.__contains__
    assert rate_key(scope_with(f"Bearer {known}"), is_known) == token_id_of(known)
    assert rate_key(scope_with(f"Bearer {unknown}"), is_known) == "10.0.0.7"


def test_the_limiter_tracks_at_most_max_keys_and_forgets_the_idlest() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, rate=1.0, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.take(key) == 0.0
        clock.advance(0.1)
    assert limiter.take("a") > 0.0  # a is being limited, and now the most recent
    assert limiter.take("d") == 0.0
    assert len(limiter) == 3
    assert "b" not in limiter  # idle the longest
    assert limiter.take("a") > 0.0  # still limited: its bucket was kept
    for n in range(1000):
        limiter.take(f"flood-{n}")
    assert len(limiter) == 3


def test_a_refused_key_is_reported_once_per_interval() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, rate=1.0, burst=1, report_interval=60.0)
    limiter.take("a")
    assert limiter.report_due("a")
    assert not any(limiter.report_due("a") for _ in range(100))
    clock.advance(59.0)
    assert not limiter.report_due("a")
    clock.advance(1.0)
    assert limiter.report_due("a")
    assert not limiter.report_due("never-seen")


@dataclass
class AuditedApp:
    client: TestClient
    clock: FakeClock
    limiter: RateLimiter
    events: list[AuditEvent] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    failing: bool = False

    def get(self, secret: str | None = None) -> Any:
        headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
        return self.client.get("/api/v1/things", headers=headers)


def audited_app(rate: float = 0.5, burst: int = 2) -> AuditedApp:
    clock = FakeClock(1_800_000_000.0)
    inner = FastAPI()

    @inner.get("/api/v1/things")
    def things() -> dict[str, str]:
        return {"ok": "yes"}

    limiter = RateLimiter(clock, rate=rate, burst=burst)
    holder = AuditedApp(TestClient(inner), clock, limiter)

    async def audit(events: Sequence[AuditEvent]) -> None:
        if holder.failing:
            raise StoreError("disk full")
        holder.events.extend(events)

    inner.add_middleware(
        RateLimitMiddleware, limiter=limiter, audit=audit, known=holder.known.__contains__
    )
    return holder


def test_two_tokens_from_one_address_each_have_their_own_bucket() -> None:
    app = audited_app()
    alice, bob = made_up_secret(), made_up_secret()
    app.known.update({token_id_of(alice) or "", token_id_of(bob) or ""})
    assert [app.get(alice).status_code for _ in range(3)] == [200, 200, 429]
    assert [app.get(bob).status_code for _ in range(2)] == [200, 200]
    assert app.get().status_code == 200  # the address's own bucket is untouched
    assert "this token" in app.get(alice).json()["error"]["message"]


def test_a_flood_of_made_up_tokens_is_one_key_limited_as_one_address() -> None:
    app = audited_app()
    statuses = [app.get(made_up_secret()).status_code for _ in range(50)]
    assert statuses[:2] == [200, 200]
    assert set(statuses[2:]) == {429}
    assert len(app.limiter) == 1


def test_a_flood_is_audited_once_a_minute_with_address_and_credential() -> None:
    app = audited_app()
    secret = made_up_secret()
    app.known.add(token_id_of(secret) or "")
    statuses = [app.get(secret).status_code for _ in range(40)]
    assert statuses.count(429) == 38
    assert len(app.events) == 1
    event = app.events[0]
    assert event.kind is AuditKind.RATE_LIMITED
    assert event.outcome is AuditOutcome.REFUSED
    assert event.credential_id == token_id_of(secret)
    assert event.remote is not None
    assert event.remote.startswith("testclient:")
    assert event.detail["limited_by"] == "credential"
    assert event.detail["request"] == "GET /api/v1/things"
    assert secret not in repr(event)
    app.clock.advance(30.0)  # refilled part way: refused again, not reported again
    [app.get(secret) for _ in range(40)]
    assert len(app.events) == 1
    app.clock.advance(30.0)
    [app.get(secret) for _ in range(40)]
    assert len(app.events) == 2


def test_an_address_without_a_known_token_is_audited_by_address() -> None:
    app = audited_app()
    junk = made_up_secret()
    [app.get(junk) for _ in range(10)]
    assert len(app.events) == 1
    assert app.events[0].detail["limited_by"] == "address"
    assert app.events[0].credential_id == token_id_of(junk)  # what it presented


def test_a_failing_audit_store_still_answers_429() -> None:
    app = audited_app()
    app.failing = True
    assert [app.get().status_code for _ in range(3)] == [200, 200, 429]
