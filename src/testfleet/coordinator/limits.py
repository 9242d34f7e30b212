"""Per-client request rate limits: token buckets on the injected clock.

Callers: :func:`~testfleet.coordinator.app.create_app` wraps the REST app in
:class:`RateLimitMiddleware`; the worker channel keeps one :class:`TokenBucket`
per connection for its frame rate. Time comes from a
:class:`~testfleet.clock.Clock`, so unit tests drive the buckets with a fake
clock and never sleep.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from testfleet.clock import Clock
from testfleet.coordinator.api_errors import RATE_LIMITED

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths the rate limit never refuses: a monitor must always learn whether the
#: coordinator is up, and workers connect over their own channel (which has
#: its own frame-rate limit).
HEALTH_PATH = "/api/v1/health"
RATE_EXEMPT = frozenset({HEALTH_PATH, "/api/v1/workers/connect"})
#: Buckets kept before full ones are forgotten (a full bucket is the same as a
#: new one, so forgetting it changes nothing but memory).
_PRUNE_AT = 10_000


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each event takes one."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when one was there, else the seconds until one will be."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled completely (and can be forgotten)."""
        self._refill(now)
        return self._tokens >= self.burst


class RateLimiter:
    """One :class:`TokenBucket` per client key."""

    def __init__(self, clock: Clock, rate: float, burst: int) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> float:
        """0.0 if ``key`` may go on now, else the seconds it should wait."""
        now = self.clock.now()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def _prune(self, now: float) -> None:
        for key in [key for key, bucket in self._buckets.items() if bucket.full(now)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def rate_key(scope: Scope) -> str:
    """Whom a request counts against: the client's address.

    The one place that decides it: once requests carry credentials, key by
    the credential here instead, so that clients behind one proxy or NAT do
    not share a bucket.
    """
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimitMiddleware:
    """Answer 429 (``rate_limited``, with ``Retry-After``) to a client past its rate.

    Health and the worker channel are exempt (:data:`RATE_EXEMPT`).
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in RATE_EXEMPT:
            await self.app(scope, receive, send)
            return
        wait = self.limiter.take(rate_key(scope))
        if wait <= 0.0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        response = RATE_LIMITED.response(
            f"more than {self.limiter.rate:g} requests per second (burst "
            f"{self.limiter.burst}) from this client; retry after {retry_after} s"
        )
        response.headers["Retry-After"] = str(retry_after)
        await response(scope, receive, send)
