"""The worker channel over a real WebSocket: the agent's default :class:`Connector`.

Callers: :class:`testfleet.worker.agent.WorkerAgent`, unless it is handed
another connector (tests hand it the in-memory one). This module is the only
part of the worker that knows ``websockets``: it maps that library's
exceptions onto the channel's (:mod:`testfleet.protocol.channel`), and a
failed open onto :class:`ConnectFailed` carrying the phrase
:func:`describe_connection_failure` makes of it, so what a worker logs about
an unreachable coordinator stays the same whatever the agent is connected by.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidURI

from testfleet.protocol.channel import (
    AddressError,
    Channel,
    ChannelClosed,
    CloseCode,
    ConnectFailed,
    Frame,
)
from testfleet.protocol.codec import MAX_FRAME_BYTES
from testfleet.worker.connection_report import describe_connection_failure

#: Seconds to open the socket and finish the WebSocket handshake.
OPEN_TIMEOUT = 10.0
#: WebSocket keepalive: a ping every PING_INTERVAL seconds, and a coordinator
#: that has not answered one within PING_TIMEOUT is taken for hung (SIGSTOPped,
#: its machine frozen, or a network that drops packets without a reset). Its
#: process may never come back, and with several coordinators the leader's
#: lease passes to a standby (10 s by default), so the worker must leave on its
#: own: within about 10 s it drops the connection and tries its next address.
#: Pongs are answered by the coordinator's event loop, whose lag stays in
#: milliseconds (commits run in threads; README, "Overview"), so 7.5 s of
#: silence is far from anything a healthy coordinator does.
PING_INTERVAL = 2.5
PING_TIMEOUT = 7.5
#: After a close (ours, or a ping timeout's), how long to wait for the
#: coordinator to close the TCP connection before dropping it. websockets'
#: default, 10 s, kept a worker on a hung coordinator 10 s past its ping
#: timeout (benchmarks/failover.py); a healthy one closes within milliseconds.
CLOSE_TIMEOUT = 2.0
#: The close code websockets sends when a ping went unanswered.
_KEEPALIVE_TIMEOUT_CODE = 1011


class WebSocketChannel:
    """A :class:`~testfleet.protocol.channel.Channel` over one client connection."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket

    async def send(self, frame: Frame) -> None:
        try:
            await self._socket.send(frame)
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def receive(self) -> Frame:
        try:
            return await self._socket.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def close(self, code: CloseCode = CloseCode.NORMAL) -> None:
        await self._socket.close(code=code.value)


def _closed(exc: ConnectionClosed) -> ChannelClosed:
    # websockets' own wording ("received 1000 (OK); then sent 1000 (OK)") is
    # what the worker's log has always quoted; it stays the message.
    received = exc.rcvd
    sent = exc.sent
    return ChannelClosed(
        str(exc),
        clean=isinstance(exc, ConnectionClosedOK),
        code=None if received is None else received.code,
        reason="" if received is None else received.reason,
        # Nothing came back, and this side closed with 1011: a ping went unanswered.
        silent=received is None and sent is not None and sent.code == _KEEPALIVE_TIMEOUT_CODE,
    )


class WebSocketConnector:
    """Opens WebSocket channels. The worker's heartbeats tell the coordinator the
    worker lives; keepalive pings (``PING_INTERVAL``) tell the worker the
    coordinator does, since it sends nothing while it has nothing to say."""

    def __init__(
        self,
        *,
        open_timeout: float = OPEN_TIMEOUT,
        ping_interval: float = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
    ) -> None:
        """``ssl_context``: for ``wss://`` addresses, the context that verifies the
        coordinator and presents the worker's certificate
        (:func:`testfleet.security.tls.client_context`); None uses the system's CAs.
        ``token``: the worker's token, sent as ``Authorization: Bearer`` on the
        upgrade request (``testfleet worker --token``)."""
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_frame_bytes = max_frame_bytes
        self.ssl_context = ssl_context
        self._headers = {"Authorization": f"Bearer {token}"} if token else None

    @asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Channel]:
        try:
            socket = await connect(
                url,
                max_size=self.max_frame_bytes,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                close_timeout=CLOSE_TIMEOUT,
                open_timeout=self.open_timeout,
                # websockets refuses an ssl argument for a ws:// address.
                ssl=self.ssl_context if url.startswith("wss://") else None,
                additional_headers=self._headers,
            )
        except InvalidURI as exc:
            raise AddressError(str(exc)) from None
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
            problem = describe_connection_failure(exc, url, self.open_timeout)
            raise ConnectFailed(problem) from exc
        try:
            yield WebSocketChannel(socket)
        finally:
            await socket.close()
