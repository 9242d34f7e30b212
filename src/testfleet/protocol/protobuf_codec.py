"""Encode and decode worker-channel messages as Protocol Buffers envelopes.

Callers: the gRPC transport of the worker channel (issue 16), which carries
:class:`~testfleet.protocol.proto.worker_channel_pb2.Frame` messages and puts
an :class:`Envelope` in their ``protobuf`` field; it uses :func:`to_envelope`
and :func:`from_envelope` on the envelope its stream has already parsed.
:func:`encode_protobuf` and :func:`decode_protobuf` do the same on bytes (the
contract tests, and any transport that carries raw frames). Like
:func:`testfleet.protocol.codec.decode`, decoding raises nothing but
:class:`~testfleet.protocol.codec.ProtocolError`.

One definition of each message. ``proto/worker_channel.proto`` has a message
per model of :mod:`testfleet.protocol.messages` with the same field names,
and this module converts between them by walking the protobuf descriptors,
not by a hand-written copy per message: a decoded envelope becomes the same
plain document a JSON frame would be, which then goes through a JSON frame's
storability check (with the doubles, which JSON text cannot make inf or nan,
checked on the way) and the same pydantic validation (:data:`MESSAGE_ADAPTER`).
The models stay the one place where values are checked, and every codec
accepts and refuses the same values. The domain documents inside messages
(a task, a result, capabilities, test records) travel as ``JsonDocument``,
their JSON bytes: they are defined in pydantic, stored and served as JSON
everywhere else, and a protobuf copy of them would be a second definition
that drifts.

How the version keeps old and new peers apart. On the WebSocket channel the
version travels once, in ``hello`` and ``welcome``, and the coordinator
refuses a hello of another version (``coordinator/workers.py``): a JSON
frame names its fields, so a peer of another version cannot be misread in
between, only refused as invalid. A protobuf frame names nothing: fields are
numbers, missing ones read as zero and unknown ones are skipped, so a frame
of another schema would decode into a wrong message without an error.
Hence every envelope carries its sender's :data:`PROTOCOL_VERSION`, and it
is checked before anything else in the frame is read; a frame of another
version is refused with ``unsupported_version``, saying both versions and
which side to upgrade (the one with the lower version: the message reads
right on either side). Within one version, fields this side does not know
are refused too, as the models refuse unknown keys. The refusal is raised on
the side that received the frame; telling the peer (an ``error`` frame the
peer can read, say in a ``Frame``'s JSON, which no version change breaks)
and stopping a worker for good instead of reconnecting are the transport's
part, as ``unsupported_version`` error frames already are on the WebSocket
channel (``worker/agent_settings.FATAL_CODES``).

``Codec`` has no ``protobuf`` member yet: a WebSocket coordinator welcomes a
worker with the first codec its hello lists, and the WebSocket frames can
only carry JSON text or MessagePack. Over gRPC, each ``Frame`` says its own
encoding; the transport decides how the two sides agree on it.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from pydantic import ValidationError

from testfleet.domain.json_values import Path
from testfleet.protocol.codec import MAX_FRAME_BYTES, ProtocolError, check_storable, describe
from testfleet.protocol.messages import (
    MESSAGE_ADAPTER,
    PROTOCOL_VERSION,
    Codec,
    LogChunk,
    Message,
    MessageType,
    ProtocolErrorCode,
)
from testfleet.protocol.proto import worker_channel_pb2 as pb

#: The envelope's oneof; its field names are the :class:`MessageType` values.
_ONEOF = "message"
_TYPE_DOUBLE = FieldDescriptor.TYPE_DOUBLE


def _enum_table(proto: EnumDescriptor, prefix: str, values: Sequence[str]) -> dict[str, int]:
    """The numbers of ``proto``'s values for the Python values (``prefix`` +
    the value in capitals), checked both ways at import: a Python enum member
    without a proto value, or a proto value without a member, would otherwise
    only show when such a frame is sent."""
    numbers = {
        value: proto.values_by_name[prefix + value.upper()].number
        for value in values
        if prefix + value.upper() in proto.values_by_name
    }
    missing = set(values) - set(numbers)
    unmapped = {v.name for v in proto.values if v.number != 0} - {
        prefix + value.upper() for value in numbers
    }
    if missing or unmapped or 0 in numbers.values():
        raise RuntimeError(
            f"worker_channel.proto's {proto.name} and the Python values differ "
            f"(no proto value for {sorted(missing)}, no Python value for {sorted(unmapped)}): "
            "edit the .proto and run `make protos`"
        )
    return numbers


#: Per proto enum (by full name): Python value -> number, and back.
_ENUM_NUMBERS: dict[str, dict[str, int]] = {
    pb.Codec.DESCRIPTOR.full_name: _enum_table(
        pb.Codec.DESCRIPTOR, "CODEC_", [codec.value for codec in Codec]
    ),
    pb.ErrorCode.DESCRIPTOR.full_name: _enum_table(
        pb.ErrorCode.DESCRIPTOR, "ERROR_CODE_", [code.value for code in ProtocolErrorCode]
    ),
    pb.LogStream.DESCRIPTOR.full_name: _enum_table(
        pb.LogStream.DESCRIPTOR,
        "LOG_STREAM_",
        typing.get_args(LogChunk.model_fields["stream"].annotation),
    ),
}
_ENUM_VALUES: dict[str, dict[int, str]] = {
    name: {number: value for value, number in table.items()}
    for name, table in _ENUM_NUMBERS.items()
}


# ------------------------------------------------------------------- encoding


def to_envelope(message: Message) -> pb.Envelope:
    """``message`` in an envelope stamped with this side's :data:`PROTOCOL_VERSION`."""
    envelope = pb.Envelope(protocol_version=PROTOCOL_VERSION)
    document = message.model_dump(mode="json")
    del document["type"]  # said by which member of the oneof is set
    _fill_message(getattr(envelope, message.type.value), document)
    return envelope


def encode_protobuf(message: Message) -> bytes:
    """``message`` as the bytes of its envelope."""
    return to_envelope(message).SerializeToString()


def _fill_message(target: ProtoMessage, document: Any) -> None:
    if isinstance(target, pb.JsonDocument):
        target.json = orjson.dumps(document)
        return
    target.SetInParent()  # present even when every field has its default
    _fill(target, document)


def _fill(target: ProtoMessage, document: Mapping[str, Any]) -> None:
    """Set ``target``'s fields from a model's JSON-mode dump. A None is left
    unset: an ``optional`` field or a submessage is then absent, as None was."""
    for field in target.DESCRIPTOR.fields:
        value = document.get(field.name)
        if value is None:
            continue
        if field.message_type is not None:
            if field.is_repeated:
                container = getattr(target, field.name)
                for item in value:
                    _fill_message(container.add(), item)
            else:
                _fill_message(getattr(target, field.name), value)
        elif field.enum_type is not None:
            numbers = _ENUM_NUMBERS[field.enum_type.full_name]
            if field.is_repeated:
                getattr(target, field.name).extend(numbers[item] for item in value)
            else:
                setattr(target, field.name, numbers[value])
        elif field.is_repeated:
            getattr(target, field.name).extend(value)
        else:
            setattr(target, field.name, value)


# ------------------------------------------------------------------- decoding


def decode_protobuf(data: bytes) -> Message:
    """Decode the bytes of an envelope into a typed message."""
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(
            ProtocolErrorCode.FRAME_TOO_LARGE,
            f"frame of {len(data)} bytes exceeds the limit of {MAX_FRAME_BYTES}",
        )
    try:
        envelope = pb.Envelope.FromString(data)
    except DecodeError as exc:
        raise ProtocolError(
            ProtocolErrorCode.MALFORMED_FRAME, f"frame is not a protobuf envelope: {exc}"
        ) from None
    return from_envelope(envelope)


def from_envelope(envelope: pb.Envelope) -> Message:
    """The typed message in ``envelope``, checked as a JSON frame's would be.

    An envelope holding fields this version does not know is refused, and
    loses them (they are discarded to find out): the caller is done with it.
    """
    version = envelope.protocol_version
    if version != PROTOCOL_VERSION:
        raise ProtocolError(ProtocolErrorCode.UNSUPPORTED_VERSION, _version_mismatch(version))
    kind = envelope.WhichOneof(_ONEOF)
    if kind is None:
        raise ProtocolError(
            ProtocolErrorCode.UNKNOWN_MESSAGE,
            "the envelope holds no message this protocol version knows; expected one of "
            f"{sorted(t.value for t in MessageType)}",
        )
    if _had_unknown_fields(envelope):
        raise ProtocolError(
            ProtocolErrorCode.INVALID_MESSAGE,
            f"invalid '{kind}' message: it holds fields that protocol version "
            f"{PROTOCOL_VERSION} does not have",
        )
    raw = _read(getattr(envelope, kind), kind, ())
    raw["type"] = kind
    # What is left to check is what a JSON text frame leaves: the documents
    # came through orjson as a JSON frame does (so no nan, inf, huge integer
    # or lone surrogate in them), typed integers are bounded by their wire
    # types, strings are UTF-8, and the doubles were checked by _read. So the
    # JSON frame's cheap check, not the MessagePack frame's walk of every
    # value (measured here on a result frame of 100 results: 3.0 ms to decode
    # against 7.0 ms with the walk, and 1.5 ms for the same frame as JSON).
    check_storable(raw, kind, text=True)
    try:
        return MESSAGE_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ProtocolError(
            ProtocolErrorCode.INVALID_MESSAGE, f"invalid '{kind}' message: {describe(exc)}"
        ) from None


def _version_mismatch(version: int) -> str:
    """Both versions, and which side to upgrade (the one with the lower version)."""
    sender = (
        "version 0 (none set: not a testfleet envelope?)" if version == 0 else f"version {version}"
    )
    older = "sending" if version < PROTOCOL_VERSION else "receiving"
    return (
        f"the frame is of protocol {sender}, this side speaks version {PROTOCOL_VERSION}: "
        f"upgrade the {older} side (worker or coordinator) so that both run the same "
        "testfleet release"
    )


def _had_unknown_fields(envelope: pb.Envelope) -> bool:
    # Discarding is recursive and cheap next to parsing; comparing sizes
    # tells whether anything was there without walking every submessage.
    size = envelope.ByteSize()
    envelope.DiscardUnknownFields()
    return envelope.ByteSize() != size


def _read(source: ProtoMessage, kind: str, path: Path) -> dict[str, Any]:
    """``source`` as the plain document its model validates. What was absent
    stays absent, so the model applies its default or names the field as
    required; an enum number with no Python value is passed on as the number,
    for the model to refuse by name."""
    document: dict[str, Any] = {}
    for field in source.DESCRIPTOR.fields:
        name = field.name
        value = getattr(source, name)
        if field.is_repeated:
            items = list(value)
            if field.message_type is not None:
                items = [_read_single(item, kind, (*path, name, i)) for i, item in enumerate(items)]
            elif field.enum_type is not None:
                names = _ENUM_VALUES[field.enum_type.full_name]
                items = [names.get(number, number) for number in items]
            document[name] = items
        elif field.has_presence and not source.HasField(name):
            continue  # absent: a None, a default, or a required field missing
        elif field.message_type is not None:
            document[name] = _read_single(value, kind, (*path, name))
        elif field.enum_type is not None:
            if value != 0:  # the UNSPECIFIED value: absent
                document[name] = _ENUM_VALUES[field.enum_type.full_name].get(value, value)
        else:
            if field.type == _TYPE_DOUBLE and not math.isfinite(value):
                # A double carries inf and nan, which no store can hold (and
                # which the JSON frame's check would let through as null).
                raise _invalid(kind, (*path, name), f"{value} is not a finite number")
            document[name] = value
    return document


def _read_single(value: Any, kind: str, path: Path) -> Any:
    if isinstance(value, pb.JsonDocument):
        return _read_json(value.json, kind, path)
    if isinstance(value, ProtoMessage):
        return _read(value, kind, path)
    return value


def _read_json(data: bytes, kind: str, path: Path) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _invalid(kind, path, f"not a JSON document ({exc})") from None


def _invalid(kind: str, path: Path, problem: str) -> ProtocolError:
    """A refusal naming the field, worded as the other codecs word theirs."""
    where = ".".join(str(p) for p in path)[:200]
    return ProtocolError(
        ProtocolErrorCode.INVALID_MESSAGE, f"invalid '{kind}' message: {where}: {problem}"
    )
