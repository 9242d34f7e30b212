"""The worker channel's frames on gRPC (``protocol/grpc_frames.py``), the address
parser, and the connector that picks a transport by scheme (issue 16).

No sockets: ``wrap``/``unwrap`` are pure, and the scheme connector is given
recording stand-ins for the two transports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testfleet.grpc_runtime import grpc
from testfleet.protocol.channel import AddressError, Channel, CloseCode
from testfleet.protocol.codec import (
    MAX_FRAME_BYTES,
    ProtobufFrame,
    ProtocolError,
    decode,
    encode,
)
from testfleet.protocol.grpc_frames import (
    CLOSE_CODE_KEY,
    CLOSE_REASON_KEY,
    close_metadata,
    grpc_target,
    parse_close_metadata,
    status_for,
    unwrap,
    wrap,
)
from testfleet.protocol.messages import Codec, Heartbeat, LogChunk, ProtocolErrorCode
from testfleet.protocol.proto import worker_channel_pb2
from testfleet.worker.agent_settings import channel_url
from testfleet.worker.transports import SchemeConnector, is_grpc_address


@pytest.mark.parametrize("codec", list(Codec))
def test_a_frame_of_every_codec_survives_the_stream(codec: Codec) -> None:
    frame = encode(Heartbeat(running_attempts=[1, 2, 2**63 - 1]), codec)
    assert unwrap(wrap(frame)) == frame
    assert decode(unwrap(wrap(frame))) == decode(frame)


def test_text_and_bytes_travel_in_their_own_fields() -> None:
    assert worker_channel_pb2.Frame.FromString(wrap("{}")).WhichOneof("body") == "json"
    assert worker_channel_pb2.Frame.FromString(wrap(b"\x80")).WhichOneof("body") == "msgpack"
    envelope = encode(Heartbeat(), Codec.PROTOBUF)
    assert worker_channel_pb2.Frame.FromString(wrap(envelope)).WhichOneof("body") == "protobuf"


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 300_000])
def test_an_envelope_is_written_as_protobuf_writes_it_and_read_back_marked(size: int) -> None:
    # wrap() writes the key and length itself rather than parsing the envelope
    # again; the bytes must be the library's, at every varint length.
    message = LogChunk(attempt_id=1, data="x" * size)
    frame = encode(message, Codec.PROTOBUF)
    assert isinstance(frame, ProtobufFrame)
    envelope = worker_channel_pb2.Envelope.FromString(frame)
    assert wrap(frame) == worker_channel_pb2.Frame(protobuf=envelope).SerializeToString()
    back = unwrap(wrap(frame))
    assert isinstance(back, ProtobufFrame)
    assert decode(back) == message


def test_a_frame_with_more_than_its_envelope_is_read_by_the_library() -> None:
    # Not what wrap() writes (an unknown field after the envelope): the slice
    # is not taken, protobuf parses the Frame, and the envelope still decodes.
    frame = encode(Heartbeat(running_attempts=[7]), Codec.PROTOBUF)
    data = wrap(frame) + b"\x20\x01"
    back = unwrap(data)
    assert isinstance(back, ProtobufFrame)
    assert decode(back) == Heartbeat(running_attempts=[7])


def test_an_empty_envelope_reaches_the_codec_which_refuses_its_version() -> None:
    data = worker_channel_pb2.Frame(protobuf=worker_channel_pb2.Envelope()).SerializeToString()
    frame = unwrap(data)
    assert isinstance(frame, ProtobufFrame)
    with pytest.raises(ProtocolError) as refused:
        decode(frame)
    assert refused.value.code is ProtocolErrorCode.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(b"\xff\xff\xff", "not a testfleet.worker_channel.v1.WorkerChannel Frame"),
        pytest.param(b"", "an empty Frame"),
    ],
)
def test_what_is_not_a_frame_is_refused_as_malformed(data: bytes, says: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        unwrap(data)
    assert refused.value.code is ProtocolErrorCode.MALFORMED_FRAME
    assert says in refused.value.message


def test_an_oversized_message_is_refused_by_its_size_before_parsing() -> None:
    with pytest.raises(ProtocolError) as refused:
        unwrap(b"\x12" + b"\x00" * (MAX_FRAME_BYTES + 64))
    assert refused.value.code is ProtocolErrorCode.FRAME_TOO_LARGE


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_unwrap_answers_any_bytes_with_a_frame_or_a_protocol_error(data: bytes) -> None:
    refused: ProtocolError | None = None
    try:
        frame = unwrap(data)
    except ProtocolError as exc:
        refused = exc
    if refused is not None:
        assert refused.code in (
            ProtocolErrorCode.MALFORMED_FRAME,
            ProtocolErrorCode.FRAME_TOO_LARGE,
        )
        return
    assert isinstance(frame, str | bytes)
    # Whatever came out, the codec answers it: a message or its own refusal.
    with suppress(ProtocolError):
        decode(frame)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=512), st.binary(max_size=512)))
def test_wrap_then_unwrap_is_the_identity(frame: str | bytes) -> None:
    assert unwrap(wrap(frame)) == frame


def test_every_refusal_has_a_status_and_only_too_many_workers_is_retryable() -> None:
    statuses = {code: status_for(code) for code in ProtocolErrorCode}
    assert grpc.StatusCode.OK not in statuses.values()
    retryable = {c for c, s in statuses.items() if s is grpc.StatusCode.UNAVAILABLE}
    assert retryable == {ProtocolErrorCode.TOO_MANY_WORKERS}
    assert statuses[ProtocolErrorCode.WORKER_ID_IN_USE] is grpc.StatusCode.ALREADY_EXISTS


def test_close_metadata_round_trips_and_drops_a_reason_that_is_not_ascii() -> None:
    sent = close_metadata(CloseCode.NOT_LEADER.value, "https://leader:8700")
    assert parse_close_metadata(sent) == (4010, "https://leader:8700")
    assert parse_close_metadata(close_metadata(1012, "smörgåsbord\n")) == (1012, "")
    assert parse_close_metadata(None) == (None, "")
    # What a hostile peer could put there is ignored, never trusted as a code.
    hostile = ((CLOSE_CODE_KEY, "9" * 400), (CLOSE_REASON_KEY, b"x" * 5000))
    assert parse_close_metadata(hostile) == (None, "x" * 1024)


@pytest.mark.parametrize(
    ("url", "target", "secure"),
    [
        ("grpc://127.0.0.1:8701", "127.0.0.1:8701", False),
        ("grpcs://fleet.example.com:443", "fleet.example.com:443", True),
        ("grpcs://[::1]:8701/", "[::1]:8701", True),
    ],
)
def test_grpc_addresses_become_targets(url: str, target: str, secure: bool) -> None:
    assert grpc_target(url) == (target, secure)
    assert channel_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("grpc://host", "has no port"),
        ("grpc://host:99999", "the port is not a number"),
        ("grpc://:8701", "has no host name"),
        ("grpcs://host:8701/api/v1", "no path or query"),
        ("http://host:8700", "is not a gRPC address"),
    ],
)
def test_a_bad_grpc_address_says_what_to_write(url: str, says: str) -> None:
    with pytest.raises(AddressError, match=says):
        grpc_target(url)


class Recording:
    """A connector that records the addresses it was asked for."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    @asynccontextmanager
    async def connect(self, url: str) -> AsyncIterator[Channel]:
        self.urls.append(url)
        yield None  # type: ignore[misc]  # never used: only the choice is under test


async def test_the_scheme_picks_the_transport() -> None:
    websocket, grpc_side = Recording(), Recording()
    connector = SchemeConnector(websocket, grpc_side)
    for url in ("ws://a:1/api/v1/workers/connect", "grpcs://b:2", "wss://c:3/x", "grpc://d:4"):
        async with connector.connect(url):
            pass
    assert websocket.urls == ["ws://a:1/api/v1/workers/connect", "wss://c:3/x"]
    assert grpc_side.urls == ["grpcs://b:2", "grpc://d:4"]
    assert is_grpc_address(" grpc://d:4")
    assert not is_grpc_address("https://e:5")


def test_an_unknown_scheme_or_a_missing_grpc_connector_is_an_address_error() -> None:
    with pytest.raises(AddressError, match="not ftp://"):
        SchemeConnector(Recording()).connect("ftp://x:1")
    with pytest.raises(AddressError, match="not set up for gRPC"):
        SchemeConnector(Recording()).connect("grpc://x:1")
