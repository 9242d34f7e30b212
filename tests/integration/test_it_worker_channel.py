"""The worker WebSocket under abuse: each bad peer gets an ``error`` frame and a close,
and a real worker process connected at the same time carries on undisturbed.

One coordinator and one real worker serve the whole module, over TLS with
worker certificates like every fleet fixture; the raw peers here are
``websockets``' synchronous client speaking the real message classes, each
presenting a certificate for the worker id it says hello as (peers without
one, or with another's, are ``test_it_tls.py``'s).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import orjson
import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet
from real_work import assert_real_work_done, start_real_work
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from testfleet.domain.hardware import WorkerCapabilities
from testfleet.protocol.codec import decode, encode
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Error,
    Heartbeat,
    Hello,
    Welcome,
)

pytestmark = [pytest.mark.integration]

REAL_WORKER = "channel-real"
POLICY_VIOLATION = 1008


#: The certificate a raw peer presents when its frames name no worker.
RAW_PEER = "raw-peer"


@dataclass
class Channel:
    fleet: Fleet

    def connect(self, worker_id: str = RAW_PEER, max_size: int | None = 2**20) -> ClientConnection:
        """A raw worker socket presenting ``worker_id``'s certificate (over TLS)."""
        context = self.fleet.ssl_context(worker_id)
        return connect(self.fleet.ws_url, open_timeout=30, max_size=max_size, ssl=context)


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Channel]:
    fleet = Fleet(Path(tmp_path_factory.mktemp("channel")))
    try:
        fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
        fleet.start_worker(REAL_WORKER, slots=2)
        yield Channel(fleet)
    finally:
        fleet.close()


def hello(worker_id: str, *, version: int = PROTOCOL_VERSION, session_key: str | None = None):
    """A hello from a worker that runs no task type (so nothing is ever placed on it)."""
    return Hello(
        protocol_version=version,
        worker_id=worker_id,
        session_key=session_key or secrets.token_hex(16),
        capabilities=WorkerCapabilities(
            hostname="raw-socket", os="test", python_version="3", task_types=[]
        ),
        slots=1,
    )


def expect_error_then_close(ws: ClientConnection, code: str) -> Error:
    frame = ws.recv(timeout=30)
    assert isinstance(frame, str), "error frames are JSON text"
    message = decode(frame)
    assert isinstance(message, Error), message
    assert message.code.value == code, message
    assert message.message
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None, "the coordinator did not send a close frame"
    assert closed.value.rcvd.code == POLICY_VIOLATION
    return message


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param("this is not json", "malformed_frame", id="garbage-text"),
        pytest.param(b"\xc1\xc1\xc1", "malformed_frame", id="garbage-binary"),
        pytest.param("[1, 2, 3]", "malformed_frame", id="json-array"),
        pytest.param('{"type": "teleport"}', "unknown_message", id="unknown-type"),
        pytest.param('{"type": "hello"}', "invalid_message", id="hello-missing-fields"),
        pytest.param(msgpack.packb({"no": "type"}), "unknown_message", id="msgpack-no-type"),
        # Issue 8: these two left ASGI tracebacks and closed without an error frame.
        pytest.param('{"type": []}', "unknown_message", id="type-is-a-list"),
        pytest.param(
            orjson.dumps({"type": "t" * 16_384}).decode(), "unknown_message", id="16-kb-type"
        ),
        # Issue 8: accepted and stored as null; the file then no longer opened.
        pytest.param(
            msgpack.packb(
                {
                    **hello("raw-infinite").model_dump(mode="json"),
                    "capabilities": {
                        **hello("raw-infinite").capabilities.model_dump(mode="json"),
                        "memory_gb": float("inf"),
                    },
                }
            ),
            "invalid_message",
            id="msgpack-hello-with-infinite-memory",
        ),
    ],
)
def test_a_bad_first_frame_gets_an_error_and_a_close(channel, frame, code):
    with channel.connect() as ws:
        ws.send(frame)
        expect_error_then_close(ws, code)
    assert channel.fleet.client.health()["status"] == "ok"


def test_a_first_frame_that_is_not_hello_is_not_registered(channel):
    with channel.connect() as ws:
        ws.send(encode(Heartbeat()))
        error = expect_error_then_close(ws, "not_registered")
        assert "hello" in error.message


def test_garbage_after_hello_closes_only_that_socket(channel):
    fleet = channel.fleet
    ids = start_real_work(fleet, "after-hello")
    with channel.connect("raw-garbage-after-hello") as ws:
        ws.send(encode(hello("raw-garbage-after-hello")))
        welcome = decode(ws.recv(timeout=30))
        assert isinstance(welcome, Welcome), welcome
        assert welcome.worker_id == "raw-garbage-after-hello"
        ws.send("}{ not a frame")
        expect_error_then_close(ws, "malformed_frame")
    assert_real_work_done(fleet, ids, REAL_WORKER)
    raw = {w["worker_id"]: w for w in fleet.client.workers()}["raw-garbage-after-hello"]
    assert raw["connected"] is False


def test_an_impostor_with_a_connected_workers_id_is_refused(channel):
    fleet = channel.fleet
    ids = start_real_work(fleet, "impostor")
    # Its certificate too (a copy of the real worker's files): the id is in use.
    with channel.connect(REAL_WORKER) as ws:
        ws.send(encode(hello(REAL_WORKER)))  # a fresh session_key: another process
        error = expect_error_then_close(ws, "worker_id_in_use")
        assert REAL_WORKER in error.message
    assert_real_work_done(fleet, ids, REAL_WORKER)
    # And it still takes new work afterwards.
    assert_real_work_done(
        fleet, start_real_work(fleet, "after-impostor", count=2, seconds=0.2), REAL_WORKER
    )


def test_an_unsupported_protocol_version_is_refused(channel):
    with channel.connect("raw-from-the-future") as ws:
        ws.send(encode(hello("raw-from-the-future", version=PROTOCOL_VERSION + 1)))
        error = expect_error_then_close(ws, "unsupported_version")
        assert str(PROTOCOL_VERSION + 1) in error.message
    known = {w["worker_id"] for w in channel.fleet.client.workers()}
    assert "raw-from-the-future" not in known


def test_a_large_invalid_first_frame_does_not_hurt_the_fleet(channel):
    fleet = channel.fleet
    ids = start_real_work(fleet, "big-frame", count=2, seconds=0.5)
    with channel.connect(max_size=None) as ws:
        ws.send(orjson.dumps({"type": "heartbeat", "pad": "x" * (2 * 1024 * 1024)}).decode())
        expect_error_then_close(ws, "invalid_message")
    assert_real_work_done(fleet, ids, REAL_WORKER)


def test_after_the_abuse_the_file_still_opens(channel):
    # Nothing any bad peer sent may have poisoned the store: a coordinator
    # restarted on the file reads every row of it.
    fleet = channel.fleet
    fleet.stop(fleet.processes["coordinator"])
    with fleet.open_store() as store:
        assert store.load_state().unreadable_rows == []
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    assert fleet.client.health()["status"] == "ok"
