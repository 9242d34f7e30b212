"""The transport seam of the worker channel: what both sides need of a connection.

Callers: the worker agent opens channels through a :class:`Connector` and
talks over a :class:`Channel`; the coordinator's worker endpoint and its
connection registry serve one :class:`Channel` per worker. Behind the seam
are the WebSocket implementations (``worker/websocket_channel.py`` for the
agent, the Starlette adapter in ``coordinator/worker_channel.py``) and, for
tests, the in-memory pair in :mod:`testfleet.testing.memory_channel`, so a
whole fleet can run in one process without a socket (httpx's transports are
the model).

A channel carries whole frames (text for JSON, bytes for MessagePack); what is
in them is :mod:`testfleet.protocol.codec`'s business, not the transport's.
"""

from __future__ import annotations

import enum
from contextlib import AbstractAsyncContextManager
from typing import Protocol

#: One message as it travels: JSON text or MessagePack bytes.
Frame = str | bytes


class CloseCode(enum.IntEnum):
    """Why a side closed the channel (WebSocket close codes, which the peer sees)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    #: The coordinator refused a frame (an ``error`` frame went first).
    POLICY_VIOLATION = 1008
    #: This coordinator is a standby (failover on PostgreSQL, issue 13): it accepted
    #: the socket only to say so. The close reason is the leader's base URL
    #: (empty when no leader is known, or when its URL is over the 123 bytes a
    #: reason may hold); the worker reconnects there, else to its next address.
    NOT_LEADER = 4010
    #: The coordinator is restarting (uvicorn closes its WebSockets with it on
    #: SIGTERM): the worker reconnects, and logs it as expected, not as a fault.
    SERVICE_RESTART = 1012


class ChannelClosed(Exception):
    """The channel is closed: by the peer, by this side, or lost.

    ``clean`` is True when the peer closed it on purpose with a normal code
    (the agent then ends its session quietly); the message says what the
    transport saw, for the worker's log. ``code`` and ``reason``: the close
    code and reason the peer sent, when it sent one (a standby's
    :attr:`CloseCode.NOT_LEADER` names the leader in its reason). ``silent``:
    this side gave up because the peer stopped answering pings (a hung or
    paused coordinator), not because the connection broke or was closed.
    """

    def __init__(
        self,
        message: str,
        *,
        clean: bool = False,
        code: int | None = None,
        reason: str = "",
        silent: bool = False,
    ) -> None:
        super().__init__(message)
        self.clean = clean
        self.code = code
        self.reason = reason
        self.silent = silent


class ConnectFailed(Exception):
    """Opening a channel failed in a way a later try may not: the message is one
    phrase saying what the address answered (see ``worker/connection_report.py``)."""


class AddressError(ValueError):
    """The address cannot be connected to at all (retrying cannot help)."""


class Channel(Protocol):
    """One open connection carrying frames both ways, in order."""

    async def send(self, frame: Frame) -> None:
        """Send one frame; :class:`ChannelClosed` if the channel is closed."""
        ...

    async def receive(self) -> Frame:
        """The next frame from the peer; :class:`ChannelClosed` once it is closed."""
        ...

    async def close(self, code: CloseCode = CloseCode.NORMAL) -> None:
        """Close the channel (the peer sees ``code``); closing twice is harmless."""
        ...


class Connector(Protocol):
    """Opens channels to an address: how the worker agent reaches its coordinator."""

    def connect(self, url: str) -> AbstractAsyncContextManager[Channel]:
        """Open a channel to ``url`` for the ``async with`` block, closed after it.

        Raises :class:`ConnectFailed` if the channel cannot be opened now,
        :class:`AddressError` if ``url`` can never be.
        """
        ...
