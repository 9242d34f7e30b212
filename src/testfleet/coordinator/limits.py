"""Per-client request rate limits: token buckets on the injected clock.

Callers: :func:`~testfleet.coordinator.app.create_app` wraps the REST app in
:class:`RateLimitMiddleware`; the worker channel keeps one :class:`TokenBucket`
per connection for its frame rate. Time comes from a
:class:`~testfleet.clock.Clock`, so unit tests drive the buckets with a fake
clock and never sleep.

Whom a request counts against (:func:`rate_key`): the API token it carries,
so that clients behind one proxy or NAT each have their own bucket, else the
client's address. The limiter runs before the token check and reads no store:
it takes the token id from the secret's text (``tfk_<id>_...``), and counts a
request against that id only when the coordinator already knows the id
(``known``, the auth layer's tokens in memory). A well-formed secret is easy
to make up: were every id its own bucket, a flood of made-up tokens would
never be limited, and would grow the limiter by a key per request. Made-up,
junk or missing tokens all count against the address, one key per address.

Memory is bounded: at most ``max_keys`` keys are tracked, and a new one
pushes out the one idle the longest (a bucket that has refilled is the same
as a new one, so forgetting an idle key changes nothing but memory).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from testfleet.clock import Clock
from testfleet.coordinator.api_errors import RATE_LIMITED
from testfleet.security.audit import AuditEvent, AuditKind, AuditOutcome
from testfleet.security.tokens import token_id_of
from testfleet.store import StoreError

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Appends events to the audit trail, durable on return (``Auth.record_events``).
AuditSink = Callable[[Sequence[AuditEvent]], Awaitable[None]]
#: Whether a token id is one the coordinator knows (``Auth.knows``); reads no store.
KnownToken = Callable[[str], bool]

#: Paths the rate limit never refuses: a monitor must always learn whether the
#: coordinator is up, and workers connect over their own channel (which has
#: its own frame-rate limit).
HEALTH_PATH = "/api/v1/health"
#: Kubernetes' liveness probe (``/api/v1/health/live``), exempt like health.
LIVE_PATH = "/api/v1/health/live"
RATE_EXEMPT = frozenset({HEALTH_PATH, LIVE_PATH, "/api/v1/workers/connect"})
#: Keys tracked at most (about 200 bytes each). Far above the clients of a real
#: fleet; only a flood from that many addresses at once pushes out a key that
#: is still being limited (which then starts over with a full burst).
MAX_TRACKED_KEYS = 10_000
#: A key refused again and again is audited once in this many seconds: a flood
#: is one ``rate_limited`` event a minute, not one row per refused request.
REPORT_INTERVAL_SECONDS = 60.0


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


@dataclass(slots=True)
class _Client:
    """What the limiter keeps per key."""

    bucket: TokenBucket
    #: When a refusal of this key was last reported (None: not since it was tracked).
    reported: float | None = None


class RateLimiter:
    """One :class:`TokenBucket` per client key, at most ``max_keys`` of them."""

    def __init__(
        self,
        clock: Clock,
        rate: float,
        burst: int,
        *,
        max_keys: int = MAX_TRACKED_KEYS,
        report_interval: float = REPORT_INTERVAL_SECONDS,
    ) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = max(1, burst)
        self.max_keys = max(1, max_keys)
        self.report_interval = report_interval
        #: Least recently used first: the front is the key idle the longest.
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def take(self, key: str) -> float:
        """0.0 if ``key`` may go on now, else the seconds it should wait."""
        now = self.clock.now()
        client = self._clients.get(key)
        if client is None:
            while len(self._clients) >= self.max_keys:
                self._clients.popitem(last=False)
            client = self._clients[key] = _Client(TokenBucket(self.rate, self.burst, now))
        else:
            self._clients.move_to_end(key)
        return client.bucket.take(now)

    def report_due(self, key: str) -> bool:
        """Whether a refusal of ``key`` is to be audited now: the first one, then
        at most one per ``report_interval``. Called by the middleware after
        :meth:`take` refused ``key``; a True answer counts as the report."""
        client = self._clients.get(key)
        if client is None:
            return False
        now = self.clock.now()
        if client.reported is not None and now - client.reported < self.report_interval:
            return False
        client.reported = now
        return True

    def __len__(self) -> int:
        return len(self._clients)

    def __contains__(self, key: object) -> bool:
        return key in self._clients


def presented_token_id(scope: Scope) -> str | None:
    """The token id in the request's ``Authorization: Bearer`` secret, when the
    secret is well formed (:func:`~testfleet.security.tokens.token_id_of`);
    None for no header, another scheme or junk. Nothing is looked up."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, secret = value.decode("latin-1").partition(" ")
            return token_id_of(secret.strip()) if scheme.lower() == "bearer" else None
    return None


def client_address(scope: Scope) -> str:
    """The client's address as the socket gave it (no port), or ``unknown``."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def rate_key(scope: Scope, known: KnownToken | None = None) -> str:
    """Whom a request counts against: its token's id when the request carries a
    well-formed one that ``known`` accepts (every well-formed one without
    ``known``), else the client's address. See the module docstring for why."""
    token_id = presented_token_id(scope)
    if token_id is not None and (known is None or known(token_id)):
        return token_id
    return client_address(scope)


class RateLimitMiddleware:
    """Answer 429 (``rate_limited``, with ``Retry-After``) to a client past its rate.

    Health and the worker channel are exempt (:data:`RATE_EXEMPT`). With an
    ``audit`` sink, a refused key is recorded as a ``rate_limited`` event (its
    address, the token id it presented, what it asked) at most once per
    :data:`REPORT_INTERVAL_SECONDS`.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        *,
        audit: AuditSink | None = None,
        known: KnownToken | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.audit = audit
        self.known = known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in RATE_EXEMPT:
            await self.app(scope, receive, send)
            return
        key = rate_key(scope, self.known)
        wait = self.limiter.take(key)
        if wait <= 0.0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        if self.audit is not None and self.limiter.report_due(key):
            await self._report(scope, key, retry_after)
        limited = "this token" if key == presented_token_id(scope) else "this client address"
        response = RATE_LIMITED.response(
            f"more than {self.limiter.rate:g} requests per second (burst "
            f"{self.limiter.burst}) from {limited}; retry after {retry_after} s"
        )
        response.headers["Retry-After"] = str(retry_after)
        await response(scope, receive, send)

    async def _report(self, scope: Scope, key: str, retry_after: int) -> None:
        assert self.audit is not None
        token_id = presented_token_id(scope)
        client = scope.get("client")
        event = AuditEvent(
            time=self.limiter.clock.now(),
            kind=AuditKind.RATE_LIMITED,
            outcome=AuditOutcome.REFUSED,
            credential_id=token_id,
            remote=f"{client[0]}:{client[1]}" if client else None,
            detail={
                "request": f"{scope.get('method', '')} {str(scope.get('path', ''))[:300]}",
                "limited_by": "credential" if key == token_id else "address",
                "rate_per_second": self.limiter.rate,
                "burst": self.limiter.burst,
                "retry_after_seconds": retry_after,
                "reported_once_per_seconds": self.limiter.report_interval,
            },
        )
        try:
            await self.audit([event])
        except StoreError as exc:
            # The refusal stands either way; a store that cannot take the event
            # must not turn a 429 into a 500.
            log.warning("could not audit a rate-limited client: %s", exc)
