"""The rate limiter on a fake clock: burst, refill, Retry-After, exemptions."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from testfleet.coordinator.limits import (
    HEALTH_PATH,
    RateLimiter,
    RateLimitMiddleware,
    TokenBucket,
    rate_key,
)
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
