"""The worker channel endpoint: one channel per connected worker.

Callers: the app's WebSocket route calls :func:`serve_worker` (uvicorn, for
each worker that connects to ``/api/v1/workers/connect``), which wraps the
socket in a :class:`StarletteChannel`; tests attach an in-memory channel to a
loop with :func:`serve_channel` directly, with no HTTP
(``testfleet.testing.fleet``). :func:`serve_channel` only decodes frames and
turns them into events for the loop; the loop's state decides everything. A
frame that cannot be decoded gets an ``error`` frame naming the problem and
the channel is closed; the coordinator and every other connection carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from testfleet.clock import wait_within
from testfleet.coordinator.events import WorkerConnected, WorkerDisconnected, WorkerFrame
from testfleet.coordinator.limits import TokenBucket
from testfleet.coordinator.loop import CoordinatorLoop, CoordinatorUnavailableError
from testfleet.coordinator.peer_certificate import peer_certificate_der
from testfleet.coordinator.workers import identity_refusal
from testfleet.protocol.channel import Channel, ChannelClosed, CloseCode, Frame
from testfleet.protocol.codec import ProtocolError, decode
from testfleet.protocol.messages import Error, Hello, ProtocolErrorCode
from testfleet.security.tls import worker_id_of_der

log = logging.getLogger(__name__)

WORKER_CHANNEL_PATH = "/api/v1/workers/connect"
#: A socket that does not say hello in this time is closed.
HELLO_TIMEOUT_SECONDS = 10.0


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
    socket: WebSocket, loop: CoordinatorLoop, *, require_certificate: bool = False
) -> None:
    """The app's route: accept the upgrade, then serve the worker over it.

    Over TLS, the worker's verified client certificate (if it sent one; see
    ``peer_certificate.py``) names the only worker id this socket may say
    hello as; ``require_certificate`` (``--client-ca``) refuses a socket with
    none. Both are checked at the hello, so a refused worker reads why.
    """
    der = peer_certificate_der(socket.scope)
    certified_id = worker_id_of_der(der) if der is not None else None
    await socket.accept()
    await serve_channel(
        StarletteChannel(socket),
        loop,
        certified_id=certified_id,
        require_certificate=require_certificate,
        peer=_peer(socket),
    )


def _peer(socket: WebSocket) -> str:
    client = socket.client
    return f"{client.host}:{client.port}" if client is not None else "?"


async def serve_channel(
    channel: Channel,
    loop: CoordinatorLoop,
    *,
    certified_id: str | None = None,
    require_certificate: bool = False,
    peer: str = "?",
) -> None:
    """Run one worker connection until either side closes it.

    ``certified_id``/``require_certificate``: see :func:`serve_worker` (tests
    attaching an in-memory channel pass them to play a TLS peer).
    """
    connections = loop.connections
    connection_id = connections.open(channel)
    registered = False
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
        hello = decode(frame)
        if not isinstance(hello, Hello):
            raise ProtocolError(
                ProtocolErrorCode.NOT_REGISTERED,
                f"the first message must be 'hello', got '{hello.type.value}'",
            )
        refusal = identity_refusal(hello, certified_id, require_certificate)
        if refusal is not None:
            # Audit hook: an identity mismatch or a missing certificate is a
            # security event; when the audit table lands, record it here
            # (worker id claimed, certified id, peer address, outcome refused).
            log.warning(
                "worker connection %d from %s refused: hello as %r, certificate for %r: %s",
                connection_id,
                peer,
                hello.worker_id,
                certified_id,
                refusal.message,
            )
            connections.close(connection_id, Error(code=refusal.code, message=refusal.message))
            return
        loop.post(WorkerConnected(connection_id, hello))
        registered = True
        while True:
            frame = await channel.receive()
            if frames.take(loop.clock.now()) > 0.0:
                raise ProtocolError(
                    ProtocolErrorCode.TOO_MANY_FRAMES,
                    f"more than {settings.max_worker_frames_per_second:g} frames per second",
                )
            loop.post(WorkerFrame(connection_id, decode(frame)))
    except ProtocolError as exc:
        log.warning("worker connection %d: %s", connection_id, exc.message)
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


async def _drain_then_forget(loop: CoordinatorLoop, connection_id: int) -> None:
    await loop.connections.wait_sent(connection_id, limit_seconds=2.0, clock=loop.clock)
    await loop.connections.forget(connection_id)
