"""Encode and decode worker-channel frames (JSON text or MessagePack binary).

Callers: the coordinator's socket handler and the worker agent. Decoding never
raises anything but :class:`ProtocolError`, whose code and message go back to
the peer in an ``error`` frame before the socket closes.
"""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
from pydantic import ValidationError

from testfleet.domain.json_values import ValueProblem, json_value_problems, shorten
from testfleet.protocol.messages import (
    MESSAGE_ADAPTER,
    Codec,
    Message,
    MessageType,
    ProtocolErrorCode,
)

#: One frame may carry a large batch of results with logs; beyond this it is refused.
MAX_FRAME_BYTES = 64 * 1024 * 1024
_KNOWN_TYPES = frozenset(t.value for t in MessageType)


#: An error frame's text is capped (see :class:`~testfleet.protocol.messages.Error`);
#: a message built from a hostile frame is cut to fit, never refused.
MAX_ERROR_CHARS = 4096


class ProtocolError(Exception):
    """A frame that cannot be accepted; ``code`` tells the peer what kind."""

    def __init__(self, code: ProtocolErrorCode, message: str) -> None:
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 20] + " ... (message cut)"
        super().__init__(message)
        self.code = code
        self.message = message


class ProtobufFrame(bytes):
    """The bytes of a protobuf ``Envelope`` (``proto/worker_channel.proto``) as a frame.

    A frame on the transport seam is ``str`` (JSON) or ``bytes`` (MessagePack);
    this subclass of ``bytes`` marks the third encoding, so :func:`decode` and
    the gRPC transport (``grpc_frames.wrap``, which puts it in
    ``Frame.protobuf``) tell it from MessagePack without looking inside. Only
    the gRPC transport carries it: a WebSocket frame would lose the mark.
    """

    __slots__ = ()


def encode(message: Message, codec: Codec = Codec.JSON) -> str | bytes:
    """Encode ``message``: a ``str`` for a JSON text frame, ``bytes`` for MessagePack,
    a :class:`ProtobufFrame` for Protocol Buffers (gRPC only)."""
    if codec is Codec.PROTOBUF:
        from testfleet.protocol.protobuf_codec import encode_protobuf

        return ProtobufFrame(encode_protobuf(message))
    data = message.model_dump(mode="json")
    if codec is Codec.MSGPACK:
        packed: bytes = msgpack.packb(data, use_bin_type=True)
        return packed
    return orjson.dumps(data).decode("utf-8")


def decode(frame: str | bytes) -> Message:
    """Decode a frame (text = JSON, binary = MessagePack, :class:`ProtobufFrame` =
    Protocol Buffers) into a typed message."""
    if isinstance(frame, ProtobufFrame):
        from testfleet.protocol.protobuf_codec import decode_protobuf

        return decode_protobuf(frame)
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(
            ProtocolErrorCode.FRAME_TOO_LARGE,
            f"frame of {len(frame)} bytes exceeds the limit of {MAX_FRAME_BYTES}",
        )
    try:
        raw: Any = (
            orjson.loads(frame) if isinstance(frame, str) else msgpack.unpackb(frame, raw=False)
        )
    except (orjson.JSONDecodeError, ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError(
            ProtocolErrorCode.MALFORMED_FRAME, f"frame is not valid JSON or MessagePack: {exc}"
        ) from None
    if not isinstance(raw, dict):
        raise ProtocolError(
            ProtocolErrorCode.MALFORMED_FRAME,
            f"a frame must be an object with a 'type' field, got {type(raw).__name__}",
        )
    kind = raw.get("type")
    # Checked as a string first: a list is unhashable, and a megabyte-long
    # name must not be quoted whole in the error frame (whose text is capped).
    if not isinstance(kind, str) or kind not in _KNOWN_TYPES:
        raise ProtocolError(
            ProtocolErrorCode.UNKNOWN_MESSAGE,
            f"unknown message type {shorten(kind)}; expected one of {sorted(_KNOWN_TYPES)}",
        )
    check_storable(raw, kind, text=isinstance(frame, str))
    try:
        return MESSAGE_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ProtocolError(
            ProtocolErrorCode.INVALID_MESSAGE, f"invalid '{kind}' message: {describe(exc)}"
        ) from None


def check_storable(raw: dict[str, Any], kind: str, *, text: bool) -> None:
    """Refuse a frame holding a value the store could not write back (see
    :mod:`testfleet.domain.json_values`). Also called by
    :func:`testfleet.protocol.protobuf_codec.from_envelope` (``text=True``: its
    documents came through orjson too).

    A JSON text frame has been through orjson already, which refuses NaN,
    infinities, invalid Unicode and non-string keys; what is left that orjson
    cannot write again is nesting past its limit, and trying costs a fraction
    of walking every value in Python (33 us against 1.1 ms for a frame of 100
    results, measured here). A MessagePack frame can carry all of them, so it
    is walked.
    """
    if text:
        try:
            orjson.dumps(raw)
        except orjson.JSONEncodeError as exc:
            raise ProtocolError(
                ProtocolErrorCode.INVALID_MESSAGE, f"invalid '{kind}' message: {exc}"
            ) from None
        return
    problems = json_value_problems(raw)
    if problems:
        raise ProtocolError(
            ProtocolErrorCode.INVALID_MESSAGE,
            f"invalid '{kind}' message: {_describe_values(problems)}",
        )


def describe(exc: ValidationError, limit: int = 5) -> str:
    """Render a pydantic error as 'field.path: problem; ...' for humans."""
    return _joined(
        [(tuple(err["loc"]), err["msg"]) for err in exc.errors(include_input=False)], limit
    )


def _describe_values(problems: list[ValueProblem], limit: int = 5) -> str:
    return _joined([(p.path, p.problem) for p in problems], limit)


def _joined(problems: list[tuple[tuple[str | int, ...], str]], limit: int) -> str:
    """'field.path: problem; ...', each field path cut short (keys come from the peer)."""
    parts = []
    for loc, problem in problems[:limit]:
        field = ".".join(str(p) for p in loc) or "(message)"
        parts.append(f"{field[:200]}: {problem[:500]}")
    more = len(problems) - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)
