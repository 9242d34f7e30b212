"""Worker channels in memory: both ends of a connection, and a connector that makes them.

Callers: tests of the worker agent and :mod:`testfleet.testing.fleet`, in
place of a WebSocket (httpx's ``MockTransport`` is the model: the network
becomes a constructor argument). Frames keep their order; a close on one end
is seen by the other; :meth:`MemoryChannel.sever` and
:attr:`MemoryChannel.drop` stand for a lost connection and a lost frame, so
a test can break the network exactly where it means to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from testfleet.domain.enums import Codec
from testfleet.protocol.channel import Channel, ChannelClosed, CloseCode, ConnectFailed, Frame

#: Put in an inbox when its channel closes: wakes a receiver that waits.
_CLOSED = object()


class MemoryChannel:
    """One end of a :func:`channel_pair`; implements
    :class:`~testfleet.protocol.channel.Channel`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.peer: MemoryChannel | None = None
        self._inbox: asyncio.Queue[Frame | object] = asyncio.Queue()
        self._closed: ChannelClosed | None = None
        #: Frames this end sends and the peer never receives (the test decides which).
        self.drop: Callable[[Frame], bool] | None = None
        #: Every frame this end sent and delivered, in order.
        self.sent: list[Frame] = []

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def send(self, frame: Frame) -> None:
        if self._closed is not None:
            raise self._closed
        assert self.peer is not None, "a MemoryChannel is made by channel_pair()"
        if self.drop is not None and self.drop(frame):
            return
        self.sent.append(frame)
        self.peer._inbox.put_nowait(frame)
        # A real send yields to the loop; so does this one, so that a sender in
        # a loop cannot starve its peer.
        await asyncio.sleep(0)

    async def receive(self) -> Frame:
        if self._closed is not None and self._inbox.empty():
            raise self._closed
        item = await self._inbox.get()
        if item is _CLOSED:
            assert self._closed is not None
            raise self._closed
        assert isinstance(item, str | bytes)
        return item

    async def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "") -> None:
        """Close both ends; frames already delivered to either can still be received.
        The peer sees ``code`` and ``reason`` (a standby's leader URL, say)."""
        clean = code in (CloseCode.NORMAL, CloseCode.GOING_AWAY)
        self._end(ChannelClosed(f"closed by this side ({code.value})", clean=clean))
        if self.peer is not None:
            self.peer._end(
                ChannelClosed(
                    f"closed by the peer ({code.value})", clean=clean, code=code, reason=reason
                )
            )

    def sever(self) -> None:
        """Lose the connection without a close handshake: both ends see an unclean close
        (what a pulled cable or a killed process looks like to the other side)."""
        self._end(ChannelClosed("connection lost (severed by the test)"))
        if self.peer is not None:
            self.peer._end(ChannelClosed("connection lost (severed by the test)"))

    def fall_silent(self) -> None:
        """The peer stops answering (hung, paused): this end gives up as the
        WebSocket keepalive does (``ChannelClosed.silent``); the peer sees the
        connection lost."""
        self._end(ChannelClosed("keepalive ping timeout (the test's)", silent=True))
        if self.peer is not None:
            self.peer._end(ChannelClosed("connection lost (the worker gave up on it)"))

    def _end(self, reason: ChannelClosed) -> None:
        if self._closed is None:
            self._closed = reason
            self._inbox.put_nowait(_CLOSED)


class CodecsChannel:
    """A channel that says which codecs it carries (``codecs``), as the gRPC one
    does: the coordinator's end of an in-memory gRPC stand-in
    (``InProcessFleet.add_worker(carries=...)``). Frames pass through as they are,
    a :class:`~testfleet.protocol.codec.ProtobufFrame` included."""

    def __init__(self, channel: Channel, codecs: tuple[Codec, ...]) -> None:
        self._channel = channel
        self.codecs = codecs

    async def send(self, frame: Frame) -> None:
        await self._channel.send(frame)

    async def receive(self) -> Frame:
        return await self._channel.receive()

    async def close(self, code: CloseCode = CloseCode.NORMAL) -> None:
        await self._channel.close(code)


def channel_pair(name: str = "channel") -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected ends: what one sends, the other receives."""
    left, right = MemoryChannel(f"{name}/left"), MemoryChannel(f"{name}/right")
    left.peer, right.peer = right, left
    return left, right


class MemoryLink:
    """One connection a :class:`MemoryConnector` made: the worker's end and the
    coordinator's."""

    def __init__(self, url: str, worker: MemoryChannel, coordinator: MemoryChannel) -> None:
        self.url = url
        self.worker = worker
        self.coordinator = coordinator


class MemoryConnector:
    """A :class:`~testfleet.protocol.channel.Connector` that opens in-memory channels
    and hands the far end of each to ``accept`` (run as its own task), as a
    server would.

    Set :attr:`refuse` to a phrase and each connect fails with
    :class:`ConnectFailed` saying it (a coordinator that is down).
    """

    def __init__(self, accept: Callable[[Channel], Coroutine[Any, Any, None]]) -> None:
        self._accept = accept
        self.refuse: str | None = None
        self.links: list[MemoryLink] = []
        self._servers: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Channel]:
        if self.refuse is not None:
            raise ConnectFailed(self.refuse)
        worker, coordinator = channel_pair(url)
        self.links.append(MemoryLink(url, worker, coordinator))
        server = asyncio.create_task(self._accept(coordinator), name=f"serve {url}")
        self._servers.add(server)
        server.add_done_callback(self._servers.discard)
        try:
            yield worker
        finally:
            await worker.close()

    async def close(self) -> None:
        """Close every channel and wait for the ``accept`` tasks to end."""
        for link in self.links:
            await link.worker.close(CloseCode.GOING_AWAY)
        if self._servers:
            await asyncio.gather(*self._servers, return_exceptions=True)
