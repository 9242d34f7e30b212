"""Worker channels as the loop sees them: numbered connections with an outbox.

Callers: the worker-channel endpoint opens and forgets connections; the loop
sends and closes through :class:`ConnectionRegistry` after each commit. Sends
never block the loop: each connection has a queue drained by its own task, so
a slow worker delays only itself. A connection is any
:class:`~testfleet.protocol.channel.Channel`: a WebSocket behind the endpoint,
or an in-memory one in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from testfleet.clock import Clock, wait_within
from testfleet.protocol.channel import Channel, CloseCode
from testfleet.protocol.codec import encode
from testfleet.protocol.messages import Codec, Error, Message, Welcome

log = logging.getLogger(__name__)


#: Sentinel in an outbox: close the channel after what came before.
_CLOSE = object()


@dataclass(slots=True)
class _Connection:
    channel: Channel
    codec: Codec = Codec.JSON
    outbox: asyncio.Queue[str | bytes | object] = field(default_factory=asyncio.Queue)
    sender: asyncio.Task[None] | None = None
    close_code: CloseCode = CloseCode.NORMAL
    closing: bool = False


class ConnectionRegistry:
    """Numbered connections; ids are never reused within a process."""

    def __init__(self) -> None:
        self._connections: dict[int, _Connection] = {}
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._connections)

    def open(self, channel: Channel) -> int:
        connection_id = self._next_id
        self._next_id += 1
        connection = _Connection(channel=channel)
        connection.sender = asyncio.create_task(
            self._send_loop(connection), name=f"worker-connection-{connection_id}"
        )
        self._connections[connection_id] = connection
        return connection_id

    def send(self, connection_id: int, message: Message) -> None:
        """Queue ``message``; a ``welcome`` switches the connection to its codec afterwards."""
        connection = self._connections.get(connection_id)
        if connection is None:
            return
        connection.outbox.put_nowait(encode(message, connection.codec))
        if isinstance(message, Welcome):
            connection.codec = message.codec

    def close(self, connection_id: int, error: Error | None = None) -> None:
        """Send ``error`` (if any), then close the channel (policy violation if an error)."""
        connection = self._connections.get(connection_id)
        if connection is None:
            return
        if error is not None:
            # Error frames go as JSON text so any peer can read why it was refused.
            connection.outbox.put_nowait(encode(error, Codec.JSON))
            connection.close_code = CloseCode.POLICY_VIOLATION
        connection.closing = True
        connection.outbox.put_nowait(_CLOSE)

    async def wait_sent(self, connection_id: int, limit_seconds: float, clock: Clock) -> None:
        """Wait until the connection's sender finished after a close, for at most
        ``limit_seconds`` on ``clock``.

        The worker-channel endpoint calls this before :meth:`forget`, so a
        refused peer gets its error frame and close; it passes the loop's
        clock, on which a fake-clock fleet bounds the wait in fake time.
        """
        connection = self._connections.get(connection_id)
        if connection is None or connection.sender is None or not connection.closing:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            # Shielded: running out of time stops the waiting, not the sender.
            await wait_within(clock, asyncio.shield(connection.sender), limit_seconds)

    async def forget(self, connection_id: int) -> None:
        """Called by the endpoint when its channel is gone: stop the sender."""
        connection = self._connections.pop(connection_id, None)
        if connection is not None and connection.sender is not None:
            connection.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection.sender

    async def close_all(self) -> None:
        for connection_id in list(self._connections):
            self.close(connection_id)
        for connection_id in list(self._connections):
            await self.forget(connection_id)

    @staticmethod
    async def _send_loop(connection: _Connection) -> None:
        while True:
            item = await connection.outbox.get()
            try:
                if item is _CLOSE:
                    await connection.channel.close(connection.close_code)
                    return
                if isinstance(item, str | bytes):
                    await connection.channel.send(item)
            except Exception as exc:  # the peer went away; the endpoint notices too
                log.debug("send failed: %s", exc)
                return
