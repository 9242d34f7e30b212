"""Fuzz the protobuf decoder: nothing but a message or a ProtocolError comes out.

Two sources of frames. Arbitrary bytes, which mostly fail to parse. And
well-typed envelopes that are wrong: a valid example of each message type
(``message_examples``) with one field anywhere in it replaced by another value
of the field's protobuf type (any int64, nan, an unknown enum number, JSON that
is not the document, bytes that are not JSON), cleared, or given an extra
element, with the envelope's version sometimes changed. Those parse, so they
reach the conversion and the models. The property: ``decode_protobuf`` either
refuses the frame with a :class:`ProtocolError` whose text fits an ``error``
frame, or returns a message that every codec round-trips unchanged. The
well-typed run also checks that it is not vacuous: some frames are accepted
and some refused.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from message_examples import MINIMAL, RICH

from testfleet.domain.json_values import INT64_MAX, INT64_MIN
from testfleet.protocol.codec import ProtocolError, decode, encode
from testfleet.protocol.messages import PROTOCOL_VERSION, Codec, Error, Message
from testfleet.protocol.protobuf_codec import decode_protobuf, encode_protobuf, to_envelope

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: FieldDescriptor.type numbers (google.protobuf.descriptor.FieldDescriptor.TYPE_*).
TYPE_DOUBLE, TYPE_INT64, TYPE_INT32, TYPE_STRING, TYPE_MESSAGE, TYPE_BYTES = 1, 3, 5, 9, 11, 12
TYPE_UINT32, TYPE_ENUM = 13, 14

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


def _check(frame: bytes) -> Message | None:
    """Decode ``frame``: the property both fuzzers hold it to."""
    try:
        message = decode_protobuf(frame)
    except ProtocolError as refusal:
        # The refusal goes back to the peer in an error frame, in any codec.
        error = Error(code=refusal.code, message=refusal.message)
        assert decode_protobuf(encode_protobuf(error)) == error
        return None
    for codec in Codec:
        assert decode(encode(message, codec)) == message
    assert decode_protobuf(encode_protobuf(message)) == message
    return message


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_are_refused(data: bytes) -> None:
    _check(data)


@FUZZ
@given(st.sampled_from(RICH + MINIMAL), st.binary(min_size=1, max_size=64))
def test_valid_frames_with_bytes_appended_decode_or_are_refused(
    message: Message, tail: bytes
) -> None:
    # Appended bytes parse as more fields (merged, unknown or corrupt).
    _check(encode_protobuf(message) + tail)


def _scalar(field: Any) -> st.SearchStrategy[Any]:
    """Any value the field's protobuf type can hold, weighted to the edges."""
    kind = field.type
    if kind == TYPE_INT64:
        return st.sampled_from([0, 1, -1, INT64_MAX, INT64_MIN]) | st.integers(INT64_MIN, INT64_MAX)
    if kind == TYPE_INT32:
        return st.sampled_from([0, 1, -1, 4097, 2**31 - 1]) | st.integers(-(2**31), 2**31 - 1)
    if kind == TYPE_UINT32:
        return st.sampled_from([0, PROTOCOL_VERSION, 2**32 - 1]) | st.integers(0, 2**32 - 1)
    if kind == TYPE_DOUBLE:
        return st.floats()
    if kind == TYPE_STRING:
        return st.text(max_size=20) | st.just("x" * 20_000)
    if kind == TYPE_ENUM:
        return st.integers(-3, 20)
    if kind == TYPE_BYTES:  # JsonDocument.json
        return (
            st.binary(max_size=20)
            # The standard library writes what orjson will not: NaN, huge integers.
            | JSON_VALUES.map(lambda value: json.dumps(value).encode())
            | st.just(b'{"a": ' * 80 + b"1" + b"}" * 80)
        )
    raise AssertionError(f"no strategy for protobuf type {kind} ({field.full_name})")


def _fields(message: Any) -> list[tuple[Any, Any]]:
    """Every (message, field) pair in ``message`` and the messages inside it."""
    found = []
    for field in message.DESCRIPTOR.fields:
        found.append((message, field))
        if field.type != TYPE_MESSAGE:
            continue
        value = getattr(message, field.name)
        for item in value if field.is_repeated else [value] if message.HasField(field.name) else []:
            found.extend(_fields(item))
    return found


@st.composite
def wrong_envelopes(draw: st.DrawFn) -> bytes:
    envelope = to_envelope(draw(st.sampled_from(RICH + MINIMAL)))
    kind = envelope.WhichOneof("message")
    assert kind is not None
    owner, field = draw(st.sampled_from(_fields(getattr(envelope, kind))))
    change = draw(st.sampled_from(["replace", "clear", "append"]))
    if change == "clear":
        owner.ClearField(field.name)
    elif field.type == TYPE_MESSAGE:
        target = getattr(owner, field.name)
        item = target.add() if field.is_repeated else target
        inner = draw(st.sampled_from(_fields(item) or [(item, None)]))
        if inner[1] is not None and inner[1].type != TYPE_MESSAGE:
            _set(inner[0], inner[1], draw(_scalar(inner[1])), draw(st.booleans()))
        item.SetInParent()
    else:
        _set(owner, field, draw(_scalar(field)), change == "append")
    if draw(st.integers(0, 9)) == 0:
        version = envelope.DESCRIPTOR.fields_by_name["protocol_version"]
        envelope.protocol_version = draw(_scalar(version))
    return envelope.SerializeToString()


def _set(owner: Any, field: Any, value: Any, append: bool) -> None:
    if field.is_repeated:
        container = getattr(owner, field.name)
        if not append:
            del container[:]
        container.append(value)
    else:
        setattr(owner, field.name, value)


def test_well_typed_but_wrong_envelopes_decode_or_are_refused() -> None:
    outcomes: Counter[str] = Counter()

    @FUZZ
    @given(wrong_envelopes())
    def check(frame: bytes) -> None:
        outcomes["accepted" if _check(frame) is not None else "refused"] += 1

    check()
    # Not vacuous: the mutations reach both outcomes.
    assert outcomes["accepted"] > 10, outcomes
    assert outcomes["refused"] > 10, outcomes
