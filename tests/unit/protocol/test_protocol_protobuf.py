"""Contract test: every message round-trips through JSON, MessagePack and
Protobuf to the same value, and a protobuf frame that cannot be accepted
becomes a ProtocolError naming the problem, as the other codecs' do."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from message_examples import MESSAGE_CLASSES, MINIMAL, MINIMAL_RESULT, RICH
from pydantic import BaseModel

from testfleet.protocol.codec import MAX_FRAME_BYTES, ProtocolError, decode, encode
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Ack,
    AttemptResult,
    Codec,
    Error,
    Heartbeat,
    LogChunk,
    Message,
    MessageType,
    ProtocolErrorCode,
    Result,
    Welcome,
    WorkerLoad,
)
from testfleet.protocol.messages import Assignment as AssignmentModel
from testfleet.protocol.proto import worker_channel_pb2 as pb
from testfleet.protocol.protobuf_codec import (
    decode_protobuf,
    encode_protobuf,
    from_envelope,
    to_envelope,
)

PROTOCOL_MODULE = "testfleet.protocol.messages"
#: Enum numbers a peer may send (proto3 enums are open): unknown, and the zero value.
NO_SUCH_VALUE: Any = 99
UNSPECIFIED: Any = 0


def _ids(message: Message) -> str:
    return message.type.value


# ---------------------------------------------------------------- the contract


@pytest.mark.parametrize("message", RICH, ids=_ids)
def test_rich_messages_are_the_same_in_every_codec(message: Message) -> None:
    from_json = decode(encode(message, Codec.JSON))
    from_msgpack = decode(encode(message, Codec.MSGPACK))
    from_protobuf = decode_protobuf(encode_protobuf(message))
    assert from_json == from_msgpack == from_protobuf == message


@pytest.mark.parametrize("message", MINIMAL, ids=_ids)
def test_minimal_messages_are_the_same_in_every_codec(message: Message) -> None:
    from_json = decode(encode(message, Codec.JSON))
    from_msgpack = decode(encode(message, Codec.MSGPACK))
    from_protobuf = decode_protobuf(encode_protobuf(message))
    assert from_json == from_msgpack == from_protobuf == message


def test_the_examples_cover_every_member_of_the_message_union() -> None:
    # A message added to the union without examples (and so without a proven
    # proto mapping) fails here.
    assert {type(m) for m in RICH} == {type(m) for m in MINIMAL} == MESSAGE_CLASSES
    assert {m.type for m in RICH} == set(MessageType)
    assert len(RICH) == len(MINIMAL) == len(MESSAGE_CLASSES)


def _unset_fields(model: BaseModel, path: str) -> list[str]:
    """Fields of the protocol's own models in ``model`` left None or empty."""
    unset = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        where = f"{path}.{name}"
        if value is None or value == []:
            unset.append(where)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, BaseModel) and type(item).__module__ == PROTOCOL_MODULE:
                unset.extend(_unset_fields(item, where))
    return unset


def test_the_rich_examples_set_every_optional_field_and_fill_every_list() -> None:
    # Otherwise a field the proto mapping dropped could pass unnoticed: its
    # default would come back equal to the default it was sent with.
    unset = [field for m in RICH for field in _unset_fields(m, m.type.value)]
    assert unset == []


def test_every_model_has_a_proto_message_with_the_same_fields() -> None:
    envelope_fields = pb.Envelope.DESCRIPTOR.oneofs_by_name["message"].fields
    assert {f.name for f in envelope_fields} == {t.value for t in MessageType}
    nested: list[type[BaseModel]] = [WorkerLoad, AssignmentModel, AttemptResult]
    for model in [*MESSAGE_CLASSES, *nested]:
        proto = getattr(pb, model.__name__).DESCRIPTOR
        assert set(proto.fields_by_name) == set(model.model_fields) - {"type"}, model
    for message_class in MESSAGE_CLASSES:
        member = pb.Envelope.DESCRIPTOR.fields_by_name[message_class.model_fields["type"].default]
        assert member.message_type is not None
        assert member.message_type.name == message_class.__name__


@pytest.mark.parametrize("code", list(ProtocolErrorCode))
def test_every_error_code_has_its_proto_value(code: ProtocolErrorCode) -> None:
    message = Error(code=code, message="x")
    assert decode_protobuf(encode_protobuf(message)) == message
    assert to_envelope(message).error.code == pb.ErrorCode.Value(f"ERROR_CODE_{code.name}")


def test_the_envelope_carries_this_sides_version_whatever_hello_says() -> None:
    hello = MINIMAL[0]  # protocol_version=0 inside the hello
    envelope = to_envelope(hello)
    assert envelope.protocol_version == PROTOCOL_VERSION
    assert envelope.hello.protocol_version == 0
    assert from_envelope(envelope) == hello


def test_absent_and_zero_stay_apart() -> None:
    envelope = to_envelope(Heartbeat(load=WorkerLoad(gpu_utilization_percent=0.0)))
    assert envelope.heartbeat.load.HasField("gpu_utilization_percent")
    assert not envelope.heartbeat.load.HasField("gpu_memory_percent")
    decoded = from_envelope(envelope)
    assert isinstance(decoded, Heartbeat)
    assert decoded.load.gpu_utilization_percent == 0.0
    assert decoded.load.gpu_memory_percent is None


def test_the_documents_travel_as_their_json() -> None:
    envelope = to_envelope(RICH[0])
    assert envelope.hello.capabilities.json.startswith(b'{"hostname":"gpu-\xc5\x81')


# ---------------------------------------------------------------- defaults


def _envelope(**members: Any) -> pb.Envelope:
    return pb.Envelope(protocol_version=PROTOCOL_VERSION, **members)


def test_unspecified_enums_take_the_models_defaults() -> None:
    welcome = from_envelope(
        _envelope(
            welcome=pb.Welcome(
                worker_id="w", heartbeat_interval_seconds=1, heartbeat_timeout_seconds=2
            )
        )
    )
    assert isinstance(welcome, Welcome)
    assert welcome.codec is Codec.JSON
    log = from_envelope(_envelope(log=pb.LogChunk(attempt_id=1, data="x")))
    assert isinstance(log, LogChunk)
    assert log.stream == "stdout"


def test_a_heartbeat_without_load_gets_the_default_load() -> None:
    heartbeat = from_envelope(_envelope(heartbeat=pb.Heartbeat()))
    assert heartbeat == Heartbeat()


# ---------------------------------------------------------------- refusals


def _refusal(data: bytes | pb.Envelope) -> ProtocolError:
    frame = data if isinstance(data, bytes) else data.SerializeToString()
    with pytest.raises(ProtocolError) as caught:
        decode_protobuf(frame)
    # Whatever was refused, the refusal fits in an error frame to the peer.
    encode_protobuf(Error(code=caught.value.code, message=caught.value.message))
    return caught.value


@pytest.mark.parametrize(
    "data",
    [b"\xff", b"\x0a\x05abc", b"\x12\x80", b"\x08", b"\x12\x02\x12\x00\x00"],
    ids=["bad-tag", "truncated", "bad-length", "truncated-varint", "short-submessage"],
)
def test_garbage_is_a_malformed_frame(data: bytes) -> None:
    assert _refusal(data).code is ProtocolErrorCode.MALFORMED_FRAME


def test_a_string_that_is_not_utf8_is_a_malformed_frame() -> None:
    good = _envelope(bye=pb.Bye(reason="é")).SerializeToString()
    bad = good.replace("é".encode(), b"\xff\xfe")
    assert _refusal(bad).code is ProtocolErrorCode.MALFORMED_FRAME


def test_an_oversized_frame_is_refused_before_parsing() -> None:
    refusal = _refusal(b"\xff" * (MAX_FRAME_BYTES + 1))
    assert refusal.code is ProtocolErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize("data", [b"", _envelope().SerializeToString()], ids=["empty", "no-body"])
def test_an_envelope_without_a_message_is_an_unknown_message(data: bytes) -> None:
    if not data:  # no bytes at all: no version either, which is said first
        assert _refusal(data).code is ProtocolErrorCode.UNSUPPORTED_VERSION
        return
    refusal = _refusal(data)
    assert refusal.code is ProtocolErrorCode.UNKNOWN_MESSAGE
    assert "heartbeat" in refusal.message


def test_a_message_this_version_does_not_have_is_an_unknown_message() -> None:
    # Field 99 of the envelope: a oneof member a later version might add.
    data = _envelope().SerializeToString() + b"\x9a\x06\x00"
    assert _refusal(data).code is ProtocolErrorCode.UNKNOWN_MESSAGE


@pytest.mark.parametrize(
    ("version", "upgrade"),
    [(0, "sending"), (PROTOCOL_VERSION + 1, "receiving"), (2**32 - 1, "receiving")],
)
def test_another_protocol_version_is_refused_saying_both_and_what_to_do(
    version: int, upgrade: str
) -> None:
    envelope = to_envelope(Ack(attempt_ids=[1]))
    envelope.protocol_version = version
    refusal = _refusal(envelope)
    assert refusal.code is ProtocolErrorCode.UNSUPPORTED_VERSION
    assert f"version {version}" in refusal.message
    assert f"speaks version {PROTOCOL_VERSION}" in refusal.message
    assert f"upgrade the {upgrade} side" in refusal.message


def test_the_version_is_checked_before_the_body_is_read() -> None:
    # A frame of another version may mean anything: its body is never
    # interpreted, so the refusal is about the version, not about a field.
    # Here an "ack" whose ids this version refuses, and a "hello" without the
    # capabilities this version requires.
    for body in ({"ack": pb.Ack(attempt_ids=[0])}, {"hello": pb.Hello(worker_id="w")}):
        envelope = pb.Envelope(protocol_version=PROTOCOL_VERSION + 1, **body)
        assert _refusal(envelope).code is ProtocolErrorCode.UNSUPPORTED_VERSION


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    ("build", "field"),
    [
        (
            lambda v: _envelope(heartbeat=pb.Heartbeat(load=pb.WorkerLoad(cpu_percent=v))),
            "load.cpu_percent",
        ),
        (
            lambda v: _envelope(heartbeat=pb.Heartbeat(load=pb.WorkerLoad(gpu_memory_percent=v))),
            "load.gpu_memory_percent",
        ),
        (
            lambda v: _envelope(
                welcome=pb.Welcome(
                    worker_id="w", heartbeat_interval_seconds=v, heartbeat_timeout_seconds=1
                )
            ),
            "heartbeat_interval_seconds",
        ),
        (
            lambda v: _result_envelope(started_at=v),
            "results.0.started_at",
        ),
    ],
    ids=["cpu", "gpu-memory", "heartbeat-interval", "started-at"],
)
def test_non_finite_doubles_are_refused_naming_the_field(
    build: Any, field: str, value: float
) -> None:
    # A protobuf double carries nan and inf, which no store can hold (issue 8's
    # findings for MessagePack): refused by the same check, naming the field.
    refusal = _refusal(build(value))
    assert refusal.code is ProtocolErrorCode.INVALID_MESSAGE
    assert f"{field}: {value} is not a finite" in refusal.message


def _result_envelope(**attempt: Any) -> pb.Envelope:
    """A valid ``result`` envelope whose one attempt result has ``attempt``'s fields."""
    envelope = to_envelope(Result(results=[AttemptResult(attempt_id=1, result=MINIMAL_RESULT)]))
    for name, value in attempt.items():
        if isinstance(value, pb.JsonDocument):
            getattr(envelope.result.results[0], name).CopyFrom(value)
        else:
            setattr(envelope.result.results[0], name, value)
    return envelope


@pytest.mark.parametrize(
    ("envelope", "field"),
    [
        (
            _envelope(hello=pb.Hello(capabilities=pb.JsonDocument(json=b"{not json"))),
            "capabilities: not a JSON document",
        ),
        (
            _envelope(hello=pb.Hello(capabilities=pb.JsonDocument(json=b""))),
            "capabilities: not a JSON document",
        ),
        (
            _envelope(
                tests=pb.TestReports(
                    attempt_id=1,
                    records=[pb.JsonDocument(json=b"{}"), pb.JsonDocument(json=b"\xff")],
                )
            ),
            "records.1: not a JSON document",
        ),
        (
            _envelope(
                assign=pb.Assign(
                    assignments=[
                        pb.Assignment(attempt_id=1, attempt=1, task=pb.JsonDocument(json=b"[1,"))
                    ]
                )
            ),
            "assignments.0.task: not a JSON document",
        ),
    ],
    ids=["capabilities", "empty", "record", "task"],
)
def test_a_document_that_is_not_json_is_refused_naming_the_field(
    envelope: pb.Envelope, field: str
) -> None:
    refusal = _refusal(envelope)
    assert refusal.code is ProtocolErrorCode.INVALID_MESSAGE
    assert field in refusal.message


def test_a_document_nested_deeper_than_the_store_writes_is_refused() -> None:
    # As in a JSON text frame: orjson reads 1,024 levels but writes 254, so
    # such a result could never be stored.
    deep = b'"results":{"deep":' + b"[" * 300 + b"]" * 300 + b"}"
    document = orjson.dumps(MINIMAL_RESULT.model_dump(mode="json"))
    assert b'"results":{}' in document
    envelope = _result_envelope(
        result=pb.JsonDocument(json=document.replace(b'"results":{}', deep))
    )
    refusal = _refusal(envelope)
    assert refusal.code is ProtocolErrorCode.INVALID_MESSAGE
    assert "Recursion limit" in refusal.message
    # The same words as for the same result in a JSON frame.
    frame = encode(Result(results=[AttemptResult(attempt_id=1, result=MINIMAL_RESULT)]))
    assert isinstance(frame, str)
    with pytest.raises(ProtocolError) as as_json:
        decode(frame.replace('"results":{}', deep.decode()))
    assert as_json.value.message == refusal.message


@pytest.mark.parametrize(
    ("envelope", "field"),
    [
        (_envelope(accept=pb.Accept()), "attempt_ids: List should have at least 1 item"),
        (_envelope(accept=pb.Accept(attempt_ids=[1, 0])), "attempt_ids.1"),
        (_envelope(ack=pb.Ack(attempt_ids=[-(2**63)])), "attempt_ids.0"),
        (_envelope(error=pb.Error(message="x")), "code: Field required"),
        (_envelope(error=pb.Error(code=NO_SUCH_VALUE, message="x")), "code"),
        (_envelope(log=pb.LogChunk(attempt_id=1, stream=NO_SUCH_VALUE)), "stream"),
        (_envelope(hello=pb.Hello(codecs=[pb.CODEC_JSON, UNSPECIFIED])), "codecs.1"),
        (_envelope(hello=pb.Hello()), "capabilities: Field required"),
        (_envelope(hello=pb.Hello(slots=0)), "slots"),
        (
            _envelope(welcome=pb.Welcome(worker_id="w", heartbeat_timeout_seconds=1)),
            "heartbeat_interval_seconds",
        ),
        (
            _envelope(heartbeat=pb.Heartbeat(load=pb.WorkerLoad(memory_percent=101))),
            "load.memory_percent",
        ),
        (_envelope(reject=pb.Reject(attempt_id=1, reason="x" * 4097)), "reason"),
        (
            _envelope(
                welcome=pb.Welcome(
                    worker_id="not an id!",
                    heartbeat_interval_seconds=1,
                    heartbeat_timeout_seconds=1,
                )
            ),
            "worker_id",
        ),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_invalid_values_are_refused_by_the_models_naming_the_field(
    envelope: pb.Envelope, field: str
) -> None:
    refusal = _refusal(envelope)
    assert refusal.code is ProtocolErrorCode.INVALID_MESSAGE
    assert field in refusal.message


def test_fields_this_version_does_not_have_are_refused() -> None:
    # The models refuse unknown keys in JSON; protobuf would skip unknown
    # field numbers silently, so they are refused here instead.
    ack = pb.Ack.FromString(pb.Ack(attempt_ids=[1]).SerializeToString() + b"\x98\x06\x01")
    refusal = _refusal(_envelope(ack=ack))
    assert refusal.code is ProtocolErrorCode.INVALID_MESSAGE
    assert "fields that protocol version" in refusal.message
    # Deep inside: field 2 of a JsonDocument, which has only field 1.
    nested = _result_envelope()
    nested.result.results[0].result.MergeFromString(b"\x10\x01")
    assert _refusal(nested).code is ProtocolErrorCode.INVALID_MESSAGE


def test_protobuf_is_a_codec_of_its_own_in_the_proto_too() -> None:
    # The coordinator welcomes a worker with the first codec its hello lists
    # that its channel carries (coordinator/worker_channel.py's
    # carried_codecs): Protocol Buffers over gRPC only, where each Frame names
    # its own encoding. test_worker_channel_codecs.py runs both cases.
    assert {codec.value for codec in Codec} == {"json", "msgpack", "protobuf"}
    assert set(pb.Codec.keys()) == {
        "CODEC_UNSPECIFIED",
        "CODEC_JSON",
        "CODEC_MSGPACK",
        "CODEC_PROTOBUF",
    }
    assert decode(encode(RICH[0], Codec.PROTOBUF)) == RICH[0]
