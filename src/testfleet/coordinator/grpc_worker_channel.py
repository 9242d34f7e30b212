"""The worker channel over gRPC: a bidirectional stream per worker, beside the WebSocket.

Callers: the coordinator app's lifespan starts a :class:`GrpcWorkerServer`
when ``testfleet coordinator --grpc-port P`` asks for one, on the same event
loop as the REST API and the WebSocket endpoint, and stops it at shutdown.
Each stream is wrapped in a :class:`GrpcServerChannel` and served by
:func:`~testfleet.coordinator.worker_channel.serve_channel`, the function
that serves WebSocket workers: the same hello, the same credential checks,
the same frame limits, audit rows and loop events. A worker on either
transport is one worker of one fleet.

Credentials, as on the WebSocket: over TLS the verified client certificate
(gRPC's auth context, which checked it against ``--client-ca``) names the only
worker id the stream may say hello as; a bearer token travels as the
``authorization`` metadata. With a client CA the TLS layer insists on a
certificate (only workers use this port; REST clients use the HTTP one).

What ends a stream: the coordinator closing the channel ends the RPC with
its close code and reason in the trailing metadata (:mod:`testfleet.protocol.
grpc_frames`); a refused frame also sets a status whose details name the
problem (``invalid_argument: ...``), so any gRPC client can read why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testfleet.coordinator.loop import CoordinatorLoop
from testfleet.coordinator.worker_channel import AuditSink, serve_channel
from testfleet.coordinator.worker_credentials import presented_credentials
from testfleet.grpc_runtime import grpc
from testfleet.protocol.channel import ChannelClosed, CloseCode, Frame
from testfleet.protocol.codec import ProtocolError, decode
from testfleet.protocol.grpc_frames import (
    CONNECT_METHOD_NAME,
    MAX_MESSAGE_BYTES,
    SERVICE_NAME,
    close_metadata,
    status_for,
    unwrap,
    wrap,
)
from testfleet.protocol.messages import Codec, Error
from testfleet.security.tls import ServerTlsFiles
from testfleet.store.contract import SecurityStore

log = logging.getLogger(__name__)

#: Seconds a stopping server gives open streams to read their close.
STOP_GRACE_SECONDS = 2.0


def server_options() -> list[tuple[str, int]]:
    """The gRPC server's channel options (see the comments for each)."""
    return [
        # A second coordinator on the same port must fail to bind, not share
        # it: gRPC sets SO_REUSEPORT by default, which would split workers
        # between two processes silently.
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # Workers ping every 2.5 s to notice a hung coordinator (as their
        # WebSocket pings do); gRPC's defaults would answer that with
        # "too many pings" and drop them.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
        ("grpc.http2.max_ping_strikes", 0),
    ]


class GrpcServerChannel:
    """One worker's stream as a :class:`~testfleet.protocol.channel.Channel`.

    ``receive`` races the stream's next message against :meth:`close`, so
    closing the channel ends the serving coroutine as a closed WebSocket
    does; :meth:`finish` then ends the RPC with the close code.
    """

    #: Every codec: a Frame names its encoding (see ``worker_channel.carried_codecs``).
    codecs: tuple[Codec, ...] = tuple(Codec)

    def __init__(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        self._context = context
        self._closed = asyncio.Event()
        self.close_code: CloseCode | None = None
        #: The last frame sent: when the close is a refusal, it is the error frame.
        self._last_sent: Frame | None = None
        self._read: asyncio.Future[Any] | None = None

    async def send(self, frame: Frame) -> None:
        if self._closed.is_set():
            raise ChannelClosed("the channel is closed")
        try:
            await self._context.write(wrap(frame))
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError, RuntimeError) as exc:
            raise ChannelClosed(f"the worker's stream ended ({exc})") from None
        self._last_sent = frame

    async def receive(self) -> Frame:
        if self._read is None:
            self._read = asyncio.ensure_future(self._context.read())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({self._read, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not self._read.done():
            raise ChannelClosed("the coordinator closed the channel", clean=True)
        read, self._read = self._read, None
        try:
            data = read.result()
        except (grpc.aio.AioRpcError, asyncio.CancelledError, RuntimeError) as exc:
            raise ChannelClosed(f"the worker's stream ended ({exc})") from None
        if data is grpc.aio.EOF:
            raise ChannelClosed("the worker closed the stream", clean=True)
        # A Frame that is not one raises ProtocolError: serve_channel answers it.
        return unwrap(bytes(data))

    async def close(self, code: CloseCode = CloseCode.NORMAL) -> None:
        if self.close_code is None:
            self.close_code = code
        self._closed.set()

    async def finish(self) -> None:
        """End the RPC as the channel was closed (called by the handler, last)."""
        if self._read is not None:
            self._read.cancel()
            with contextlib.suppress(BaseException):
                await self._read
        code = self.close_code or CloseCode.NORMAL
        error = self._refusal() if code is CloseCode.POLICY_VIOLATION else None
        self._context.set_trailing_metadata(close_metadata(code.value, ""))
        if error is not None:
            # abort() raises to end the RPC: the status is the last word.
            await self._context.abort(
                status_for(error.code), f"{error.code.value}: {error.message}"
            )

    def _refusal(self) -> Error | None:
        """The error frame this channel sent before it was closed as a refusal."""
        if self._last_sent is None:
            return None
        try:
            message = decode(self._last_sent)
        except ProtocolError:
            return None
        return message if isinstance(message, Error) else None


def _peer_host(peer: str) -> str | None:
    """The host of gRPC's ``context.peer()`` (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or None
    return None


def _certificate_der(context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes | None:
    """The worker's client certificate, verified by the TLS layer (None without one)."""
    pems = list(context.auth_context().get("x509_pem_cert") or [])
    if not pems:
        return None
    return ssl.PEM_cert_to_DER_cert(pems[0].decode("ascii"))


class GrpcWorkerServer:
    """The gRPC endpoint of the worker channel: a ``grpc.aio`` server on one port."""

    def __init__(
        self,
        loop: CoordinatorLoop,
        store: SecurityStore,
        audit: AuditSink | None,
        *,
        require_certificate: bool = False,
        insecure: bool = False,
    ) -> None:
        self._loop = loop
        self._store = store
        self._audit = audit
        self._require_certificate = require_certificate
        self._insecure = insecure
        self._server: grpc.aio.Server | None = None
        self._channels: set[GrpcServerChannel] = set()
        self._encrypted = False
        self.port = 0

    async def start(self, host: str, port: int, tls: ServerTlsFiles | None) -> int:
        """Bind ``host:port`` and serve; the bound port (``port`` 0: any free one).

        Raises :class:`OSError` naming the address when it cannot be bound.
        """
        server = grpc.aio.server(options=server_options())
        # No (de)serialisers: the handler reads Frame bytes (see grpc_frames.unwrap).
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.stream_stream_rpc_method_handler(
            self._connect
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {CONNECT_METHOD_NAME: handler}),)
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if tls is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, server_credentials(tls))
        except RuntimeError as exc:
            raise OSError(f"cannot serve gRPC on {address}: {exc}") from None
        self._encrypted = tls is not None
        await server.start()
        self._server = server
        self.port = int(bound)
        return self.port

    async def stop(self) -> None:
        """Close every stream as a restart (workers come back), then stop serving."""
        for channel in list(self._channels):
            await channel.close(CloseCode.SERVICE_RESTART)
        if self._server is not None:
            await self._server.stop(STOP_GRACE_SECONDS)
            self._server = None

    async def _connect(
        self, _requests: object, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> None:
        """One worker's stream, from its first message to its close."""
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        authorization = metadata.get("authorization")
        peer = context.peer()
        credentials = await presented_credentials(
            self._store,
            certificate_der=_certificate_der(context) if self._encrypted else None,
            authorization=authorization if isinstance(authorization, str) else None,
            now=self._loop.clock.now(),
            encrypted=self._encrypted,
            peer_host=_peer_host(peer),
            insecure=self._insecure,
        )
        channel = GrpcServerChannel(context)
        self._channels.add(channel)
        try:
            await serve_channel(
                channel,
                self._loop,
                credentials=credentials,
                require_certificate=self._require_certificate,
                peer=peer,
                audit=self._audit,
            )
        finally:
            self._channels.discard(channel)
        await channel.finish()


def server_credentials(tls: ServerTlsFiles) -> grpc.ServerCredentials:
    """The coordinator's certificate and key, and (with ``--client-ca``) client
    certificates required and checked against that CA."""
    key = Path(tls.key).read_bytes()
    cert = Path(tls.cert).read_bytes()
    client_ca = Path(tls.client_ca).read_bytes() if tls.client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def check_grpc_port(host: str, port: int) -> None:
    """Bind and release ``host:port`` once, so that a port in use ends start-up with
    one line before anything is announced (gRPC binds it again in the lifespan).

    Raises :class:`OSError` as the bind did.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, port))


@dataclass(frozen=True, slots=True)
class GrpcEndpoint:
    """Where ``--grpc-port`` asks the coordinator to serve the gRPC worker channel
    (``create_app``'s ``grpc``): the HTTP port's host and TLS files, its own port."""

    host: str
    port: int
    tls: ServerTlsFiles | None = None
