"""The worker channel's frames on a gRPC stream, and what ends a stream.

Callers: both ends of the gRPC transport, the coordinator's
(``coordinator/grpc_worker_channel.py``) and the worker's
(``worker/grpc_channel.py``). The transport seam
(:mod:`testfleet.protocol.channel`) carries frames as ``str`` (JSON) or
``bytes`` (MessagePack, or a :class:`~testfleet.protocol.codec.ProtobufFrame`);
on gRPC each travels as one ``Frame`` message of
``proto/worker_channel.proto``, whose ``oneof`` says which it is, so the same
codecs and the same validation serve both transports, and Protocol Buffers
(``Frame.protobuf``, an ``Envelope``) is a third codec there.

The stream method is registered without a (de)serialiser on either side: the
bytes of a ``Frame`` reach :func:`unwrap`, so a peer sending garbage gets a
:class:`~testfleet.protocol.codec.ProtocolError` naming the problem (and the
coordinator's usual ``error`` frame and audit row), not gRPC's own
"exception deserializing request".

A WebSocket close has a code and a reason; a gRPC stream ends with a status.
The coordinator puts the close code (:class:`~testfleet.protocol.channel.CloseCode`)
and reason in the trailing metadata (:data:`CLOSE_CODE_KEY`,
:data:`CLOSE_REASON_KEY`), so the worker's agent sees the same
:class:`~testfleet.protocol.channel.ChannelClosed` whichever transport carried
it; a refused frame also ends the stream with the status
:func:`status_for` picks, whose details name the problem, for any gRPC
client that is not a testfleet worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError

from testfleet.grpc_runtime import grpc
from testfleet.protocol.channel import AddressError, Frame
from testfleet.protocol.codec import MAX_FRAME_BYTES, ProtobufFrame, ProtocolError
from testfleet.protocol.messages import ProtocolErrorCode
from testfleet.protocol.proto import worker_channel_pb2

#: The service and its one method, as ``worker_channel.proto`` names them.
SERVICE_NAME = "testfleet.worker_channel.v1.WorkerChannel"
CONNECT_METHOD_NAME = "Connect"
CONNECT_METHOD = f"/{SERVICE_NAME}/{CONNECT_METHOD_NAME}"

#: Trailing metadata keys (gRPC metadata keys are lower-case ASCII).
CLOSE_CODE_KEY = "testfleet-close-code"
CLOSE_REASON_KEY = "testfleet-close-reason"

#: A Frame's own bytes around its payload (tag and length): the gRPC message
#: limit is the frame limit plus this, so the limit a frame meets is the codec's.
FRAME_OVERHEAD_BYTES = 16
MAX_MESSAGE_BYTES = MAX_FRAME_BYTES + FRAME_OVERHEAD_BYTES

#: The status a refused frame ends the stream with, by the error frame's code.
_STATUS_BY_CODE: dict[ProtocolErrorCode, grpc.StatusCode] = {
    ProtocolErrorCode.MALFORMED_FRAME: grpc.StatusCode.INVALID_ARGUMENT,
    ProtocolErrorCode.UNKNOWN_MESSAGE: grpc.StatusCode.INVALID_ARGUMENT,
    ProtocolErrorCode.INVALID_MESSAGE: grpc.StatusCode.INVALID_ARGUMENT,
    ProtocolErrorCode.UNSUPPORTED_VERSION: grpc.StatusCode.FAILED_PRECONDITION,
    ProtocolErrorCode.NOT_REGISTERED: grpc.StatusCode.FAILED_PRECONDITION,
    ProtocolErrorCode.WORKER_ID_IN_USE: grpc.StatusCode.ALREADY_EXISTS,
    ProtocolErrorCode.FRAME_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ProtocolErrorCode.TOO_MANY_FRAMES: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ProtocolErrorCode.UNAUTHORIZED: grpc.StatusCode.PERMISSION_DENIED,
    # The worker backs off and comes back: the one refusal that is retryable.
    ProtocolErrorCode.TOO_MANY_WORKERS: grpc.StatusCode.UNAVAILABLE,
}


def status_for(code: ProtocolErrorCode) -> grpc.StatusCode:
    """The gRPC status that ends a stream refused with ``code``."""
    return _STATUS_BY_CODE.get(code, grpc.StatusCode.INVALID_ARGUMENT)


#: ``Frame.protobuf``'s key on the wire: field 3, length-delimited (wire type 2).
_PROTOBUF_KEY = (3 << 3) | 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _single_protobuf_field(data: bytes) -> bytes | None:
    """The envelope's bytes when ``data`` is exactly one ``Frame.protobuf`` field (what
    :func:`wrap` writes), else None: the payload is sliced, not parsed and written
    again, since :func:`~testfleet.protocol.protobuf_codec.decode_protobuf` parses it."""
    if not data or data[0] != _PROTOBUF_KEY:
        return None
    length = shift = 0
    for index in range(1, min(len(data), 11)):
        byte = data[index]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return data[index + 1 :] if index + 1 + length == len(data) else None
    return None


def wrap(frame: Frame) -> bytes:
    """``frame`` as the bytes of one ``Frame`` message: JSON text, MessagePack, or a
    :class:`~testfleet.protocol.codec.ProtobufFrame` (an envelope, written as the
    ``protobuf`` field's key, length and bytes: the same bytes protobuf writes for
    it, without parsing the envelope again)."""
    if isinstance(frame, ProtobufFrame):
        return bytes([_PROTOBUF_KEY]) + _varint(len(frame)) + frame
    message = (
        worker_channel_pb2.Frame(json=frame)
        if isinstance(frame, str)
        else worker_channel_pb2.Frame(msgpack=frame)
    )
    data: bytes = message.SerializeToString()
    return data


def unwrap(data: bytes) -> Frame:
    """The frame inside one ``Frame`` message's bytes, or :class:`ProtocolError`.

    Only the frame's shape is checked here; what is in it is the codec's
    business (:func:`~testfleet.protocol.codec.decode`), as on a WebSocket.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            ProtocolErrorCode.FRAME_TOO_LARGE,
            f"frame of {len(data)} bytes exceeds the limit of {MAX_FRAME_BYTES}",
        )
    envelope = _single_protobuf_field(data)
    if envelope is not None:
        return ProtobufFrame(envelope)
    message = worker_channel_pb2.Frame()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(
            ProtocolErrorCode.MALFORMED_FRAME,
            f"not a {SERVICE_NAME} Frame message ({exc}); send a Frame with json or msgpack set",
        ) from None
    body = message.WhichOneof("body")
    if body == "json":
        return message.json
    if body == "msgpack":
        return message.msgpack
    if body == "protobuf":
        return ProtobufFrame(message.protobuf.SerializeToString())
    raise ProtocolError(
        ProtocolErrorCode.MALFORMED_FRAME,
        "an empty Frame: set its json, msgpack or protobuf field to the frame's encoding",
    )


def close_metadata(code: int, reason: str) -> tuple[tuple[str, str], ...]:
    """The trailing metadata that tells the worker how its stream was closed."""
    # Metadata values are ASCII: a reason (a leader's URL) is kept only if it is.
    shown = reason if reason.isascii() and reason.isprintable() else ""
    return ((CLOSE_CODE_KEY, str(code)), (CLOSE_REASON_KEY, shown))


def parse_close_metadata(metadata: Iterable[Any] | None) -> tuple[int | None, str]:
    """The close code and reason in a stream's trailing metadata (None: none sent):
    ``(key, value)`` pairs, as both of gRPC's APIs give them."""
    code: int | None = None
    reason = ""
    for key, value in metadata or ():
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if key == CLOSE_CODE_KEY and text.isdigit() and len(text) <= 5:
            code = int(text)
        elif key == CLOSE_REASON_KEY:
            reason = text[:1024]
    return code, reason


def grpc_target(url: str) -> tuple[str, bool]:
    """``grpc://HOST:PORT`` or ``grpcs://HOST:PORT`` → (gRPC target, TLS or not).

    Raises :class:`AddressError` naming what is wrong: a gRPC address has no
    default port and no path (the service is found by name, not by URL path).
    """
    parts = urlsplit(url.strip())
    example = "e.g. grpcs://fleet.example.com:8701"
    if parts.scheme not in ("grpc", "grpcs"):
        raise AddressError(f"{url!r} is not a gRPC address ({example})")
    try:
        port = parts.port
    except ValueError:
        raise AddressError(f"{url!r}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise AddressError(f"{url!r} has no host name ({example})")
    if port is None or port == 0:
        raise AddressError(
            f"{url!r} has no port: give the port the coordinator's --grpc-port serves ({example})"
        )
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise AddressError(f"{url!r}: give only grpc(s)://HOST:PORT, no path or query ({example})")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", parts.scheme == "grpcs"
