"""The worker channel endpoint: one channel per connected worker.

Callers: the app's WebSocket route calls :func:`serve_worker` (uvicorn, for
each worker that connects to ``/api/v1/workers/connect``), which wraps the
socket in a :class:`StarletteChannel`; tests attach an in-memory channel to a
loop with :func:`serve_channel` directly, with no HTTP
(``testfleet.testing.fleet``). :func:`serve_channel` only decodes frames and
turns them into events for the loop; the loop's state decides everything. A
frame that cannot be decoded gets an ``error`` frame naming the problem and
the channel is closed; the coordinator and every other connection carry on.

Every worker needs a credential (``worker_identity.py``): the endpoint reads
the socket's certificate and bearer token at the upgrade
(``worker_credentials.py``) and judges them at the hello. A refused hello and
a frame that closed a socket are written to the audit trail: one event per
connection at most, so a flood of frames cannot flood the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from starlette.websockets import WebSocket, WebSocketDisconnect

from testfleet.clock import wait_within
from testfleet.coordinator.events import WorkerConnected, WorkerDisconnected, WorkerFrame
from testfleet.coordinator.limits import TokenBucket
from testfleet.coordinator.loop import CoordinatorLoop, CoordinatorUnavailableError
from testfleet.coordinator.peer_certificate import peer_certificate_der
from testfleet.coordinator.worker_credentials import presented_credentials
from testfleet.coordinator.worker_identity import (
    IdentityRefusal,
    PresentedCredentials,
    identity_refusal,
)
from testfleet.protocol.channel import Channel, ChannelClosed, CloseCode, Frame
from testfleet.protocol.codec import ProtocolError, decode
from testfleet.protocol.messages import Codec, Error, Hello, ProtocolErrorCode
from testfleet.security.audit import AuditEvent, AuditKind, AuditOutcome
from testfleet.store.contract import SecurityStore

log = logging.getLogger(__name__)

WORKER_CHANNEL_PATH = "/api/v1/workers/connect"
#: A socket that does not say hello in this time is closed.
HELLO_TIMEOUT_SECONDS = 10.0

#: Where refusals are recorded (``Auth.record_events``: durable on return).
AuditSink = Callable[[Sequence[AuditEvent]], Awaitable[None]]


class StarletteChannel:
    """An accepted Starlette WebSocket as a :class:`~testfleet.protocol.channel.Channel`."""

    def __init__(self, socket: WebSocket) -> None:
        self._socket = socket

    async def send(self, frame: Frame) -> None:
        try:
            if isinstance(frame, str):
                await self._socket.send_text(frame)
            else:
                await self._socket.send_bytes(frame)
        except WebSocketDisconnect as exc:
            raise ChannelClosed(f"the worker went away ({exc.code})") from None

    async def receive(self) -> Frame:
        try:
            message = await self._socket.receive()
        except WebSocketDisconnect as exc:
            raise ChannelClosed(f"the worker went away ({exc.code})") from None
        if message["type"] == "websocket.disconnect":
            code = message.get("code", CloseCode.NORMAL)
            raise ChannelClosed(
                f"the worker closed the connection ({code})",
                clean=code in (CloseCode.NORMAL, CloseCode.GOING_AWAY),
            )
        text = message.get("text")
        if text is not None:
            return str(text)
        data = message.get("bytes")
        return bytes(data) if data is not None else b""

    async def close(self, code: CloseCode = CloseCode.NORMAL) -> None:
        await self._socket.close(code=code.value)


async def serve_worker(
    socket: WebSocket,
    loop: CoordinatorLoop,
    store: SecurityStore,
    audit: AuditSink | None = None,
    *,
    require_certificate: bool = False,
    insecure: bool = False,
) -> None:
    """The app's route: check the socket's credentials, accept the upgrade, then
    serve the worker over it.

    Over TLS, the worker's verified client certificate (if it sent one; see
    ``peer_certificate.py``) names the only worker id this socket may say
    hello as; ``require_certificate`` (``--client-ca``) refuses a socket with
    none. A bearer worker token is checked against ``store`` now, before the
    accept (``worker_credentials.py``; ``insecure`` lets one in over plain
    HTTP from beyond loopback). Everything is judged at the hello, so a
    refused worker reads why; refusals go to ``audit``.
    """
    client = socket.client
    credentials = await presented_credentials(
        store,
        certificate_der=peer_certificate_der(socket.scope),
        authorization=socket.headers.get("authorization"),
        now=loop.clock.now(),
        encrypted=socket.scope.get("scheme") == "wss",
        peer_host=None if client is None else client.host,
        insecure=insecure,
    )
    await socket.accept()
    await serve_channel(
        StarletteChannel(socket),
        loop,
        credentials=credentials,
        require_certificate=require_certificate,
        peer=_peer(socket),
        audit=audit,
    )


def _peer(socket: WebSocket) -> str:
    client = socket.client
    return f"{client.host}:{client.port}" if client is not None else "?"


async def serve_channel(
    channel: Channel,
    loop: CoordinatorLoop,
    *,
    credentials: PresentedCredentials,
    require_certificate: bool = False,
    peer: str = "?",
    audit: AuditSink | None = None,
) -> None:
    """Run one worker connection until either side closes it.

    ``credentials``: what the socket came with, checked (see :func:`serve_worker`;
    tests and the in-memory fleet pass one
    :class:`~testfleet.coordinator.worker_identity.WorkerCredential` through
    ``PresentedCredentials.of``). ``audit``: where refusals are recorded (None:
    only logged).
    """
    connections = loop.connections
    connection_id = connections.open(channel)
    registered = False
    hello: Hello | None = None
    settings = loop.state.settings
    # A burst of one second's worth: a worker finishing many slots at once
    # sends a handful of frames each, far below it.
    frames = TokenBucket(
        settings.max_worker_frames_per_second,
        max(1.0, settings.max_worker_frames_per_second),
        loop.clock.now(),
    )
    try:
        if len(connections) > settings.max_workers:
            # Not fatal for the worker: it backs off and tries again.
            raise ProtocolError(
                ProtocolErrorCode.TOO_MANY_WORKERS,
                f"the coordinator already has {settings.max_workers} workers connected",
            )
        try:
            frame = await wait_within(loop.clock, channel.receive(), HELLO_TIMEOUT_SECONDS)
        except TimeoutError:
            connections.close(
                connection_id,
                Error(
                    code=ProtocolErrorCode.NOT_REGISTERED,
                    message=f"no hello within {HELLO_TIMEOUT_SECONDS:g} s",
                ),
            )
            return
        first = decode(frame)
        if not isinstance(first, Hello):
            raise ProtocolError(
                ProtocolErrorCode.NOT_REGISTERED,
                f"the first message must be 'hello', got '{first.type.value}'",
            )
        hello = _codecs_carried(first, channel)
        # Read, not written: the state checks the revocation again when it
        # applies the hello (a revoke may land in between).
        admitted = identity_refusal(
            hello,
            credentials,
            require_certificate=require_certificate,
            revoked_at=loop.state.registry.revoked.get(hello.worker_id),
        )
        if isinstance(admitted, IdentityRefusal):
            log.warning(
                "worker connection %d from %s refused: hello as %r, certificate for %r: %s",
                connection_id,
                peer,
                hello.worker_id,
                credentials.certified_id,
                admitted.message,
            )
            await _record(audit, _refusal_event(loop, hello, credentials, admitted, peer))
            connections.close(connection_id, Error(code=admitted.code, message=admitted.message))
            return
        loop.post(WorkerConnected(connection_id, hello, admitted))
        registered = True
        while True:
            frame = await channel.receive()
            received_at = loop.clock.now()
            if frames.take(received_at) > 0.0:
                raise ProtocolError(
                    ProtocolErrorCode.TOO_MANY_FRAMES,
                    f"more than {settings.max_worker_frames_per_second:g} frames per second",
                )
            loop.post(WorkerFrame(connection_id, decode(frame), received_at))
    except ProtocolError as exc:
        log.warning("worker connection %d: %s", connection_id, exc.message)
        if exc.code is not ProtocolErrorCode.TOO_MANY_WORKERS:
            # The socket closes on its first refused frame: one event per connection.
            await _record(audit, _frame_event(loop, hello, credentials, exc, peer))
        connections.close(connection_id, Error(code=exc.code, message=exc.message))
    except (ChannelClosed, CoordinatorUnavailableError):
        pass
    except Exception as exc:
        # A frame this handler did not foresee: a bug to fix, but never one
        # that takes the coordinator or another connection with it. The peer
        # is told, as for any refused frame, and the trace goes to the log.
        log.error("worker connection %d: unexpected error", connection_id, exc_info=True)
        connections.close(
            connection_id,
            Error(
                code=ProtocolErrorCode.INVALID_MESSAGE,
                message=f"the coordinator could not handle this frame ({type(exc).__name__})",
            ),
        )
    finally:
        if registered:
            with contextlib.suppress(CoordinatorUnavailableError):
                loop.post(WorkerDisconnected(connection_id))
        # Give a queued error frame and close a moment to go out before forgetting.
        await asyncio.sleep(0)
        await _drain_then_forget(loop, connection_id)


#: What a channel carries unless it says otherwise (a ``codecs`` attribute, as
#: the gRPC one has): text and bytes frames, so JSON and MessagePack.
FRAME_CODECS: tuple[Codec, ...] = (Codec.JSON, Codec.MSGPACK)


def carried_codecs(channel: Channel) -> tuple[Codec, ...]:
    """The codecs ``channel`` can carry (Protocol Buffers over gRPC only)."""
    codecs: tuple[Codec, ...] = getattr(channel, "codecs", FRAME_CODECS)
    return codecs


def _codecs_carried(hello: Hello, channel: Channel) -> Hello:
    """``hello`` with only the codecs ``channel`` carries: the state welcomes a worker
    with the first it lists, and a WebSocket worker asking for Protocol Buffers
    first gets the next it asked for (at worst JSON, which every worker reads)."""
    carried = carried_codecs(channel)
    wanted = [codec for codec in hello.codecs if codec in carried] or [Codec.JSON]
    return hello if wanted == hello.codecs else hello.model_copy(update={"codecs": wanted})


def _refusal_event(
    loop: CoordinatorLoop,
    hello: Hello,
    credentials: PresentedCredentials,
    refusal: IdentityRefusal,
    peer: str,
) -> AuditEvent:
    """The audit row of a refused hello: who it claimed to be, what vouched for what."""
    credential = credentials.certificate or credentials.token
    token_refusal = credentials.token_refusal
    credential_id = credential.credential_id if credential is not None else None
    if credential_id is None and token_refusal is not None:
        credential_id = token_refusal.token_id
    return AuditEvent(
        time=loop.clock.now(),
        kind=AuditKind.WORKER_REFUSED,
        outcome=AuditOutcome.REFUSED,
        actor=None if credential is None else credential.worker_id,
        credential_id=credential_id,
        remote=peer,
        detail={
            "reason": refusal.problem.value,
            "claimed_id": hello.worker_id,
            "certified_id": credentials.certified_id,
            "token_worker_id": None if credentials.token is None else credentials.token.worker_id,
            "message": refusal.message,
        },
    )


def _frame_event(
    loop: CoordinatorLoop,
    hello: Hello | None,
    credentials: PresentedCredentials,
    error: ProtocolError,
    peer: str,
) -> AuditEvent:
    credential = credentials.certificate or credentials.token
    return AuditEvent(
        time=loop.clock.now(),
        kind=AuditKind.WORKER_FRAME_REJECTED,
        outcome=AuditOutcome.REFUSED,
        actor=None if credential is None else credential.worker_id,
        credential_id=None if credential is None else credential.credential_id,
        remote=peer,
        detail={
            "code": error.code.value,
            "message": error.message[:500],
            "claimed_id": None if hello is None else hello.worker_id,
        },
    )


async def _record(audit: AuditSink | None, event: AuditEvent) -> None:
    """Append ``event`` to the audit trail; a failing store is logged, never a
    reason to keep a refused socket open."""
    if audit is None:
        return
    try:
        await audit([event])
    except Exception:
        log.error("could not record a worker-channel audit event: %s", event, exc_info=True)


async def _drain_then_forget(loop: CoordinatorLoop, connection_id: int) -> None:
    await loop.connections.wait_sent(connection_id, limit_seconds=2.0, clock=loop.clock)
    await loop.connections.forget(connection_id)
