"""uvicorn's HTTP protocol with a header deadline and a REST connection cap.

Callers: :func:`~testfleet.coordinator.app.run_coordinator` passes
:func:`limited_http_protocol`'s class to ``uvicorn.Config(http=...)``.

Why here and not in the ASGI app: both limits act before a request reaches
the app. uvicorn starts no timer when a connection opens and cancels its
keep-alive timer at the first byte, so a client trickling a header a byte at
a time holds its connection for ever; and uvicorn's own ``limit_concurrency``
refuses health as well and counts the worker channels. This is the
transport, so its timers are the event loop's real ones (the integration
tests run it in a real process).
"""

from __future__ import annotations

import asyncio
import json

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from testfleet.coordinator.api_errors import ApiRefusal
from testfleet.coordinator.api_models import ErrorCode
from testfleet.coordinator.limits import HEALTH_PATH, LIVE_PATH

#: The answers sent here, outside FastAPI; :mod:`~testfleet.coordinator.openapi`
#: declares them on every operation they can reach (FastAPI cannot know them).
HEADER_TIMEOUT = ApiRefusal(
    408,
    ErrorCode.REQUEST_TIMEOUT,
    "The request's headers did not all arrive within the coordinator's header timeout "
    "(`--header-timeout`, 10 s unless configured); any request, before it reaches a "
    "route. The connection is closed.",
)
CONNECTION_CAP = ApiRefusal(
    503,
    ErrorCode.UNAVAILABLE,
    "More REST connections are open than the coordinator serves at once "
    "(`--max-connections`); any request but health, before it reaches a route. "
    "Retry shortly.",
)
_REASON_PHRASES = {408: b"408 Request Timeout", 503: b"503 Service Unavailable"}


def _refusal(refusal: ApiRefusal, message: str) -> bytes:
    status = _REASON_PHRASES[refusal.status]
    body = json.dumps(
        {"error": {"code": refusal.code.value, "message": message, "details": []}}
    ).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


def limited_http_protocol(
    header_timeout_seconds: float, max_connections: int
) -> type[HttpToolsProtocol]:
    """A protocol class whose connections must send their headers within
    ``header_timeout_seconds`` (else 408 and closed), and of which at most
    ``max_connections`` are served at once (the rest get 503, health excepted).

    A class per call, so each server counts its own connections.
    """
    open_connections: set[HttpToolsProtocol] = set()
    too_many = _refusal(
        CONNECTION_CAP, f"more than {max_connections} open connections; retry shortly"
    )
    too_slow = _refusal(
        HEADER_TIMEOUT, f"the request headers did not arrive within {header_timeout_seconds:g} s"
    )

    class LimitedHttpProtocol(HttpToolsProtocol):
        _header_deadline: asyncio.TimerHandle | None = None
        #: Answered and closing: the rest of what the client sent is ignored.
        _refused = False

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(
                header_timeout_seconds, self._headers_too_slow
            )

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            self._refuse(too_slow)

        def _refuse(self, answer: bytes) -> None:
            self._refused = True
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            open_connections.add(self)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            open_connections.discard(self)
            self._disarm()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self) -> None:
            # A worker channel from here on: not a REST connection.
            open_connections.discard(self)
            self._disarm()
            super().handle_websocket_upgrade()

        def on_headers_complete(self) -> None:
            self._disarm()
            if len(open_connections) > max_connections and not self._is_health():
                self._refuse(too_many)
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def _is_health(self) -> bool:
            try:
                path: bytes = httptools.parse_url(self.url).path
            except httptools.HttpParserInvalidURLError:
                return False
            return path.decode("ascii", "replace") in (HEALTH_PATH, LIVE_PATH)

    return LimitedHttpProtocol
