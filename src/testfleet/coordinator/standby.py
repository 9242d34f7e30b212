"""What a standby coordinator serves: "not the leader; it is at URL".

Callers: :mod:`testfleet.coordinator.roles` serves :class:`StandbyApp` on the
coordinator's listeners while the process stands by (``--store
postgresql://…``). It reads the leader's address and epoch from the
:class:`~testfleet.coordinator.leadership.LeaderInfo` the campaign keeps up
to date, so every answer names the leader as last seen.

The answers (README, "Failover on PostgreSQL"; clients follow them,
``coordinator_addresses.py``):

- ``GET /api/v1/health/live``: 200 ``{"status": "alive", "role": "standby"}``
  (Kubernetes liveness: the process is fine).
- ``GET /api/v1/health``: 503 ``{"status": "standby", "leader", "epoch"}``
  (Kubernetes readiness: only the leader is ready, so a Service routes to it).
- The worker channel: accepted, then closed with ``CloseCode.NOT_LEADER``
  and the leader's URL as the reason.
- Dashboard pages: 503 with a small page linking the leader.
- Anything else: 503 ``not_leader`` naming the leader, with
  ``X-Testfleet-Leader`` and ``Retry-After: 1``.

Nothing here touches the store or needs a token: a standby knows nothing but
who leads, and says only that.
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from testfleet.coordinator.dashboard.login import DASHBOARD_PATH
from testfleet.coordinator.leadership import LeaderInfo
from testfleet.protocol.channel import CloseCode

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEALTH_PATH = "/api/v1/health"
LIVE_PATH = "/api/v1/health/live"
LEADER_HEADER = "X-Testfleet-Leader"
#: A WebSocket close reason holds at most 123 bytes (RFC 6455, 5.5.1).
MAX_REASON_BYTES = 123


def close_reason(url: str | None) -> str:
    """The leader's URL as a close reason: empty when unknown or too long."""
    if not url or len(url.encode()) > MAX_REASON_BYTES:
        return ""
    return url


class StandbyApp:
    """The ASGI app of a standby (see the module docstring); ``leader()`` is
    read at every request, so answers follow the campaign's latest look."""

    def __init__(self, leader: Callable[[], LeaderInfo]) -> None:
        self.leader = leader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._refuse_socket(receive, send)
        elif scope["type"] == "http":
            await self._answer(scope, send)

    async def _refuse_socket(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        # Accepted first: a close before the handshake reaches the client as a
        # bare 403, with no code or reason to follow.
        await send({"type": "websocket.accept"})
        reason = close_reason(self.leader().url)
        await send({"type": "websocket.close", "code": int(CloseCode.NOT_LEADER), "reason": reason})

    async def _answer(self, scope: Scope, send: Send) -> None:
        info = self.leader()
        path: str = scope.get("path", "")
        if path == LIVE_PATH:
            await _send(send, 200, _json({"status": "alive", "role": "standby"}))
            return
        headers = [(b"retry-after", b"1")]
        if info.url:
            headers.append((LEADER_HEADER.lower().encode(), info.url.encode()))
        if path == HEALTH_PATH:
            health = {"status": "standby", "leader": info.url, "epoch": info.epoch}
            await _send(send, 503, _json(health), headers)
        elif path == DASHBOARD_PATH or path.startswith(DASHBOARD_PATH + "/"):
            await _send(send, 503, _page(info), headers, content_type=b"text/html; charset=utf-8")
        else:
            where = info.url or "unknown (no coordinator leads yet)"
            body = {
                "error": {
                    "code": "not_leader",
                    "message": f"this coordinator is a standby; the leader is at {where} "
                    f"(epoch {info.epoch})",
                    "details": [{"leader": info.url, "epoch": info.epoch}],
                }
            }
            await _send(send, 503, _json(body), headers)


def _json(body: object) -> bytes:
    return json.dumps(body).encode()


def _page(info: LeaderInfo) -> bytes:
    if info.url:
        url = html.escape(info.url, quote=True)
        where = f'The leader is at <a href="{url}{DASHBOARD_PATH}">{url}</a>'
    else:
        where = "No coordinator leads yet; try again in a few seconds"
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>testfleet: standby</title>"
        "</head><body><h1>This coordinator is a standby</h1>"
        f"<p>{where} (epoch {info.epoch}).</p></body></html>"
    ).encode()


async def _send(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    content_type: bytes = b"application/json",
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
