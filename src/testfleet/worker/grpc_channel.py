"""The worker channel over gRPC: the agent's :class:`Connector` for ``grpc(s)://`` addresses.

Callers: ``testfleet worker --coordinator grpcs://HOST:PORT`` builds a
:class:`GrpcConnector` (through :class:`~testfleet.worker.transports.
SchemeConnector`, which picks it by the address's scheme), and the
:class:`~testfleet.worker.agent.WorkerAgent` opens channels through it exactly
as through the WebSocket one. This module is the only part of the worker that
knows ``grpc``: it maps the library's statuses onto the channel's exceptions
(:mod:`testfleet.protocol.channel`), so the agent's reconnects, backoff and
log lines are the same on both transports.

* Opening: a TCP connection is tried first, so that a refused or unreachable
  address is reported in the words the WebSocket connector uses
  (``connection_report.py``); then gRPC's channel must be ready within the
  open timeout and the stream is opened with the worker's token as the
  ``authorization`` metadata.
* Keepalive: HTTP/2 pings every :data:`PING_INTERVAL` seconds, and a
  coordinator that has not answered within :data:`PING_TIMEOUT` is taken for
  hung (``ChannelClosed.silent``), as with the WebSocket's pings.
* Closing: the coordinator's close code and reason arrive in the trailing
  metadata (``protocol/grpc_frames.py``); a stream that ended without them
  (the coordinator's process died, the network broke) is an unclean close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from testfleet.grpc_runtime import grpc
from testfleet.protocol.channel import (
    AddressError,
    Channel,
    ChannelClosed,
    CloseCode,
    ConnectFailed,
    Frame,
)
from testfleet.protocol.codec import ProtocolError
from testfleet.protocol.grpc_frames import (
    CONNECT_METHOD,
    MAX_MESSAGE_BYTES,
    grpc_target,
    parse_close_metadata,
    unwrap,
    wrap,
)
from testfleet.worker.connection_report import describe_connection_failure

#: As the WebSocket connector's (``websocket_channel.py``, which says why).
OPEN_TIMEOUT = 10.0
PING_INTERVAL = 2.5
PING_TIMEOUT = 7.5
CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class GrpcTls:
    """PEM bytes for a ``grpcs://`` channel: the CA that signed the coordinator's
    certificate (None: the system's roots) and the worker's own certificate and key."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None


class GrpcChannel:
    """A :class:`~testfleet.protocol.channel.Channel` over one bidirectional stream."""

    def __init__(self, call: grpc.aio.StreamStreamCall[bytes, bytes]) -> None:
        self._call = call
        self._read: asyncio.Future[object] | None = None

    async def send(self, frame: Frame) -> None:
        try:
            await self._call.write(wrap(frame))
        except grpc.aio.AioRpcError as exc:
            raise await self._closed(exc) from None
        except (asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
            raise ChannelClosed(f"the stream is closed ({exc})") from None

    async def receive(self) -> Frame:
        # The read is shielded and kept for the next call: gRPC cancels the whole
        # RPC when a pending read() is cancelled, and the agent cancels its
        # receiver when it stops, before it says bye on the same stream.
        if self._read is None:
            self._read = asyncio.ensure_future(self._call.read())
        try:
            data = await asyncio.shield(self._read)
        except asyncio.CancelledError:
            if self._read.done():
                self._read = None
            raise
        except grpc.aio.AioRpcError as exc:
            self._read = None
            raise await self._closed(exc) from None
        except (asyncio.InvalidStateError, grpc.aio.UsageError) as exc:
            self._read = None
            raise ChannelClosed(f"the stream is closed ({exc})") from None
        self._read = None
        if not isinstance(data, bytes):  # grpc.aio.EOF: the coordinator ended the stream
            raise await self._closed(None)
        try:
            return unwrap(data)
        except ProtocolError as exc:
            # The coordinator sent what no coordinator sends: leave, and retry.
            self._call.cancel()
            raise ChannelClosed(f"the coordinator sent a bad frame: {exc.message}") from None

    async def close(self, code: CloseCode = CloseCode.NORMAL) -> None:
        """End the stream: half-close, let the coordinator read what was sent and
        finish the RPC, and cancel it only if it has not within CLOSE_TIMEOUT.

        A stream has no close code of its own. Cancelling at once resets the
        stream, and what the coordinator has not read yet may go with it (a
        stopping worker's ``bye``, which makes it "left" and not
        "disconnected").
        """
        if self._call.done():
            return
        if self._read is not None and not self._read.done():
            self._read.add_done_callback(_retrieve)
        with contextlib.suppress(Exception):
            await self._call.done_writing()
            await asyncio.wait_for(self._call.wait_for_connection(), CLOSE_TIMEOUT)
            await asyncio.wait_for(self._call.code(), CLOSE_TIMEOUT)
        self._call.cancel()

    async def _closed(self, error: grpc.aio.AioRpcError | None) -> ChannelClosed:
        """The :class:`ChannelClosed` for a stream that ended (``error``: with a status)."""
        if error is not None:
            status, details, trailing = (
                error.code(),
                error.details() or "",
                error.trailing_metadata(),
            )
        else:
            status = await self._call.code()
            details = await self._call.details() or ""
            trailing = await self._call.trailing_metadata()
        code, reason = parse_close_metadata(trailing)
        said = f"gRPC {status.name.lower()}" + (f": {details}" if details else "")
        if code is not None:
            return ChannelClosed(
                f"the coordinator closed the stream ({code}; {said})",
                clean=code in (CloseCode.NORMAL, CloseCode.GOING_AWAY),
                code=code,
                reason=reason,
            )
        # No close code: the coordinator's end went away without closing.
        silent = status is grpc.StatusCode.UNAVAILABLE and "keepalive" in details.lower()
        return ChannelClosed(f"the stream ended ({said})", silent=silent)


def _retrieve(read: asyncio.Future[object]) -> None:
    """Collect a read left pending at close, so its end is not reported as unretrieved."""
    if not read.cancelled():
        read.exception()


class GrpcConnector:
    """Opens gRPC channels to ``grpc://`` (plain) and ``grpcs://`` (TLS) addresses."""

    def __init__(
        self,
        *,
        open_timeout: float = OPEN_TIMEOUT,
        ping_interval: float = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
        tls: GrpcTls | None = None,
        token: str | None = None,
    ) -> None:
        """``tls``: the files for ``grpcs://`` (None: the system's CAs, no client
        certificate). ``token``: the worker's token, sent as ``authorization``."""
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.tls = tls
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def _options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", int(self.ping_interval * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.ping_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # The agent retries with its own backoff and address list.
            ("grpc.enable_retries", 0),
        ]

    @asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Channel]:
        target, secure = grpc_target(url)
        await self._reachable(target, url)
        if secure:
            tls = self.tls or GrpcTls()
            credentials = grpc.ssl_channel_credentials(
                tls.root_certificates, tls.private_key, tls.certificate_chain
            )
            channel = grpc.aio.secure_channel(target, credentials, options=self._options())
        else:
            channel = grpc.aio.insecure_channel(target, options=self._options())
        try:
            try:
                await asyncio.wait_for(channel.channel_ready(), self.open_timeout)
            except TimeoutError:
                state = channel.get_state().name.lower()
                hint = " (a TLS problem? check --ca and the coordinator's certificate)"
                raise ConnectFailed(
                    f"no gRPC connection to {target} within {self.open_timeout:g} s "
                    f"(channel {state}){hint if secure else ''}"
                ) from None
            # No (de)serialisers: Frame bytes both ways (see grpc_frames.unwrap).
            method: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
                CONNECT_METHOD
            )
            call = method(metadata=self._metadata)
            stream = GrpcChannel(call)
            try:
                yield stream
            finally:
                await stream.close()
        finally:
            await channel.close()

    async def _reachable(self, target: str, url: str) -> None:
        """A TCP connection to ``target``, opened and closed, or :class:`ConnectFailed`
        in the words a WebSocket worker would log for the same address."""
        host, _, port = target.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), self.open_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(describe_connection_failure(exc, url, self.open_timeout)) from exc
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


__all__ = ["AddressError", "GrpcChannel", "GrpcConnector", "GrpcTls"]
