"""The worker channel over gRPC under abuse (issue 16): each bad peer is refused with
an ``error`` frame and a status that names the problem, and a real worker
process on gRPC at the same time carries on undisturbed.

One coordinator (``--grpc-port``, over TLS with worker certificates like every
fleet fixture) and one real gRPC worker serve the module. The raw peers are
``grpc``'s synchronous client calling the ``Connect`` method with hand-made
bytes, each presenting a certificate for the worker id it says hello as.
"""

from __future__ import annotations

import queue
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import msgpack
import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet
from real_work import assert_real_work_done, start_real_work

from testfleet.coordinator.worker_channel import HELLO_TIMEOUT_SECONDS
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.protocol.channel import CloseCode, Frame
from testfleet.protocol.codec import MAX_FRAME_BYTES, decode, encode
from testfleet.protocol.grpc_frames import (
    CONNECT_METHOD,
    parse_close_metadata,
    status_for,
    unwrap,
    wrap,
)
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    Hello,
    ProtocolErrorCode,
    Welcome,
)
from testfleet.protocol.proto import worker_channel_pb2
from testfleet.worker.transports import Transport

pytestmark = [pytest.mark.integration]

REAL_WORKER = "grpc-real"
RAW_PEER = "grpc-raw-peer"
#: Bounds on waiting for an answer (never expectations of speed).
ANSWER_SECONDS = 60.0


class RawStream:
    """One ``Connect`` call fed from a queue: bytes in, frames out."""

    def __init__(self, fleet: Fleet, worker_id: str | None = RAW_PEER) -> None:
        assert fleet.grpc_port is not None
        ca, cert, key = fleet.grpc_credentials(worker_id or RAW_PEER)
        credentials = (
            grpc.ssl_channel_credentials(ca, key, cert)
            if worker_id is not None
            else grpc.ssl_channel_credentials(ca)
        )
        self.channel = grpc.secure_channel(
            f"127.0.0.1:{fleet.grpc_port}",
            credentials,
            # Room to send what the coordinator must refuse.
            options=[("grpc.max_send_message_length", 2 * MAX_FRAME_BYTES)],
        )
        self._outgoing: queue.Queue[bytes | None] = queue.Queue()
        method: grpc.StreamStreamMultiCallable[bytes, bytes] = self.channel.stream_stream(
            CONNECT_METHOD
        )
        self.responses = method(iter(self._outgoing.get, None), timeout=ANSWER_SECONDS)

    def send_bytes(self, data: bytes) -> None:
        self._outgoing.put(data)

    def send(self, frame: Frame) -> None:
        self.send_bytes(wrap(frame))

    def receive(self) -> Frame:
        return unwrap(next(self.responses))

    def close(self) -> None:
        self._outgoing.put(None)
        self.channel.close()

    def __enter__(self) -> RawStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class Channel:
    fleet: Fleet

    def connect(self, worker_id: str | None = RAW_PEER) -> RawStream:
        return RawStream(self.fleet, worker_id)


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Channel]:
    fleet = Fleet(Path(tmp_path_factory.mktemp("grpc-channel")), grpc=True)
    try:
        fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
        fleet.start_worker(REAL_WORKER, slots=2, transport=Transport.GRPC)
        yield Channel(fleet)
    finally:
        fleet.close()


def hello(worker_id: str, *, version: int = PROTOCOL_VERSION) -> Hello:
    """A hello from a worker that runs no task type (so nothing is ever placed on it)."""
    return Hello(
        protocol_version=version,
        worker_id=worker_id,
        session_key=secrets.token_hex(16),
        capabilities=WorkerCapabilities(
            hostname="raw-grpc", os="test", python_version="3", task_types=[]
        ),
        slots=1,
    )


def expect_refusal(stream: RawStream, code: ProtocolErrorCode) -> Error:
    """The error frame, then the stream's end: the status for ``code``, its details
    naming the problem, and close code 1008 in the trailing metadata."""
    message = decode(stream.receive())
    assert isinstance(message, Error), message
    assert message.code is code, message
    status = stream_end(stream)
    assert status.code() is status_for(code), status
    details = status.details() or ""
    assert details.startswith(f"{code.value}: "), details
    assert message.message in details
    close_code, _ = parse_close_metadata(status.trailing_metadata())
    assert close_code == CloseCode.POLICY_VIOLATION
    return message


def stream_end(stream: RawStream) -> grpc.Call:
    """How the stream ended: the status the next read raised."""
    with pytest.raises(grpc.RpcError) as ended:
        stream.receive()
    assert isinstance(ended.value, grpc.Call), ended.value
    return ended.value


def frame_bytes(**body: object) -> bytes:
    data: bytes = worker_channel_pb2.Frame(**body).SerializeToString()  # type: ignore[arg-type]
    return data


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(b"\xff\xff\xff\xff", ProtocolErrorCode.MALFORMED_FRAME, id="garbage-bytes"),
        pytest.param(b"", ProtocolErrorCode.MALFORMED_FRAME, id="empty-frame"),
        pytest.param(
            frame_bytes(json="this is not json"), ProtocolErrorCode.MALFORMED_FRAME, id="bad-json"
        ),
        pytest.param(
            frame_bytes(msgpack=b"\xc1\xc1"), ProtocolErrorCode.MALFORMED_FRAME, id="bad-msgpack"
        ),
        pytest.param(
            frame_bytes(msgpack=msgpack.packb({"no": "type"})),
            ProtocolErrorCode.UNKNOWN_MESSAGE,
            id="msgpack-no-type",
        ),
        pytest.param(
            frame_bytes(json='{"type": "hello"}'),
            ProtocolErrorCode.INVALID_MESSAGE,
            id="hello-missing-fields",
        ),
    ],
)
def test_a_bad_first_message_is_refused_with_a_status_naming_it(channel, data, code):
    with channel.connect() as stream:
        stream.send_bytes(data)
        expect_refusal(stream, code)
    assert channel.fleet.client.health()["status"] == "ok"


def test_a_first_frame_that_is_not_hello_is_not_registered(channel):
    with channel.connect() as stream:
        stream.send(encode(Heartbeat()))
        error = expect_refusal(stream, ProtocolErrorCode.NOT_REGISTERED)
        assert "hello" in error.message


def test_a_stream_that_never_says_hello_is_closed(channel):
    with channel.connect() as stream:
        error = expect_refusal(stream, ProtocolErrorCode.NOT_REGISTERED)
        assert f"no hello within {HELLO_TIMEOUT_SECONDS:g} s" in error.message


def test_garbage_after_hello_closes_only_that_stream(channel):
    fleet = channel.fleet
    ids = start_real_work(fleet, "grpc-after-hello")
    with channel.connect("grpc-garbage-after-hello") as stream:
        stream.send(encode(hello("grpc-garbage-after-hello")))
        welcome = decode(stream.receive())
        assert isinstance(welcome, Welcome), welcome
        stream.send_bytes(b"\x0a\xff")  # a Frame whose json field is cut short
        expect_refusal(stream, ProtocolErrorCode.MALFORMED_FRAME)
    assert_real_work_done(fleet, ids, REAL_WORKER)
    raw = {w["worker_id"]: w for w in fleet.client.workers()}["grpc-garbage-after-hello"]
    assert raw["connected"] is False


def test_an_impostor_with_a_connected_workers_id_is_refused(channel):
    fleet = channel.fleet
    ids = start_real_work(fleet, "grpc-impostor")
    with channel.connect(REAL_WORKER) as stream:
        stream.send(encode(hello(REAL_WORKER)))  # a fresh session key: another process
        error = expect_refusal(stream, ProtocolErrorCode.WORKER_ID_IN_USE)
        assert REAL_WORKER in error.message
    assert_real_work_done(fleet, ids, REAL_WORKER)


def test_an_unsupported_protocol_version_is_refused(channel):
    with channel.connect("grpc-from-the-future") as stream:
        stream.send(encode(hello("grpc-from-the-future", version=PROTOCOL_VERSION + 1)))
        error = expect_refusal(stream, ProtocolErrorCode.UNSUPPORTED_VERSION)
        assert str(PROTOCOL_VERSION + 1) in error.message
    assert "grpc-from-the-future" not in {w["worker_id"] for w in channel.fleet.client.workers()}


def test_an_oversized_message_is_refused_by_its_size(channel):
    fleet = channel.fleet
    ids = start_real_work(fleet, "grpc-oversized", count=2, seconds=0.5)
    with channel.connect() as stream:
        stream.send_bytes(frame_bytes(msgpack=b"\x00" * (MAX_FRAME_BYTES + 1024)))
        status = stream_end(stream)
        assert status.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, status
        assert "larger than max" in (status.details() or "")
    assert_real_work_done(fleet, ids, REAL_WORKER)


def test_a_peer_without_a_certificate_is_refused_by_tls(channel):
    with channel.connect(worker_id=None) as stream:
        stream.send(encode(hello("grpc-no-certificate")))
        assert stream_end(stream).code() is grpc.StatusCode.UNAVAILABLE
    assert channel.fleet.client.health()["status"] == "ok"


def test_after_the_abuse_the_file_still_opens(channel):
    fleet = channel.fleet
    fleet.stop(fleet.processes["coordinator"])
    with fleet.open_store() as store:
        assert store.load_state().unreadable_rows == []
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    assert fleet.client.health()["status"] == "ok"
