"""The coordinator's limits against a real process on loopback: a client past its
rate gets 429 (audited once), a trickled header is cut off, the REST connection
cap answers 503, a worker sending too much is disconnected, a submission past
the per-submitter quota gets 429, and health answers throughout.

One coordinator, started with small limits, serves the whole module, over TLS
like every fleet fixture: the raw sockets below finish their TLS handshake
first, so each limit is tested on what a real client's connection is.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from testfleet.domain.hardware import WorkerCapabilities
from testfleet.local_fleet import CoordinatorOptions
from testfleet.protocol.codec import MAX_FRAME_BYTES, decode, encode
from testfleet.protocol.messages import PROTOCOL_VERSION, Error, Heartbeat, Hello, Welcome
from testfleet.security.tokens import token_id_of

pytestmark = [pytest.mark.integration]

RATE = 5
BURST = 10
HEADER_TIMEOUT = 1.0
MAX_CONNECTIONS = 4
FRAMES_PER_SECOND = 20
QUEUED_PER_SUBMITTER = 2
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(Path(tmp_path_factory.mktemp("limits")))
    try:
        fleet.start_coordinator(
            CoordinatorOptions(
                heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT,
                log_level="info",
                extra_args=[
                    *("--rate-limit", str(RATE), "--rate-burst", str(BURST)),
                    *("--header-timeout", str(HEADER_TIMEOUT)),
                    *("--max-connections", str(MAX_CONNECTIONS)),
                    *("--max-worker-frames", str(FRAMES_PER_SECOND)),
                    *("--max-queued-per-submitter", str(QUEUED_PER_SUBMITTER)),
                ],
            )
        )
        yield fleet
    finally:
        fleet.close()


def healthy(fleet: Fleet) -> None:
    with fleet.http(token=False, timeout=10) as client:
        response = client.get("/api/v1/health")
    assert response.status_code == 200, response.text


def test_a_client_past_its_rate_gets_429_with_retry_after(fleet: Fleet) -> None:
    # The fleet's admin token: the rate limit counts requests that get past it.
    with fleet.http(timeout=10) as client:
        statuses = [client.get("/api/v1/workers") for _ in range(BURST * 3)]
        refused = [r for r in statuses if r.status_code == 429]
        assert refused, [r.status_code for r in statuses]
        assert all(r.status_code in (200, 429) for r in statuses)
        first = refused[0]
        assert first.json()["error"]["code"] == "rate_limited"
        assert int(first.headers["Retry-After"]) >= 1
        healthy(fleet)
        # Health is exempt, however often it is asked.
        assert all(client.get("/api/v1/health").status_code == 200 for _ in range(BURST * 2))
    time.sleep(BURST / RATE)  # the bucket refills for the next tests


def test_the_flood_was_audited_once_with_the_token_and_address(fleet: Fleet) -> None:
    with fleet.http(timeout=10) as client:
        response = client.get("/api/v1/audit")
    assert response.status_code == 200, response.text
    limited = [e for e in response.json()["events"] if e["kind"] == "rate_limited"]
    assert len(limited) == 1, limited
    assert limited[0]["credential_id"] == token_id_of(fleet.token)
    assert limited[0]["remote"].startswith("127.0.0.1:")
    assert limited[0]["detail"]["limited_by"] == "credential"


def test_a_submission_past_the_submitters_quota_is_refused_whole(fleet: Fleet) -> None:
    def tasks(*names: str) -> list[dict[str, object]]:
        return [{"task_id": name, "type": "simulated", "config": {}} for name in names]

    with fleet.http(timeout=10) as client:
        accepted = client.post("/api/v1/tasks", json=tasks("quota-1", "quota-2"))
        assert accepted.status_code == 201, accepted.text
        refused = client.post("/api/v1/tasks", json=tasks("quota-3"))
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "quota_exceeded"
        assert "it has 2 queued, assigned or running" in error["message"]
        assert f"the limit is {QUEUED_PER_SUBMITTER}" in error["message"]
        assert "--max-queued-per-submitter" in error["message"]
        assert client.get("/api/v1/tasks/quota-3").status_code == 404
        cancelled = client.post("/api/v1/tasks/cancel", json={"task_ids": ["quota-1"]})
        assert cancelled.status_code == 200, cancelled.text
        assert client.post("/api/v1/tasks", json=tasks("quota-3")).status_code == 201


def test_a_trickled_header_is_cut_off_within_the_timeout(fleet: Fleet) -> None:
    started = time.monotonic()
    with fleet.raw_connection(timeout=10) as raw:
        raw.sendall(b"GET /api/v1/workers HTTP/1.1\r\n")
        answer = b""
        try:
            for _ in range(int(HEADER_TIMEOUT * 20)):
                raw.sendall(b"X-Slow: a\r\n")
                healthy(fleet)
                time.sleep(0.2)
        except OSError:
            pass  # closed under us: the point
        raw.settimeout(5)
        with contextlib.suppress(OSError):
            while chunk := raw.recv(4096):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < HEADER_TIMEOUT + 5
    healthy(fleet)


def test_past_the_connection_cap_rest_gets_503_and_health_answers(fleet: Fleet) -> None:
    idle = [fleet.raw_connection() for _ in range(MAX_CONNECTIONS)]
    try:
        with fleet.http(timeout=10) as client:
            response = client.get("/api/v1/workers")
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "unavailable"
        healthy(fleet)
    finally:
        for connection in idle:
            connection.close()
    time.sleep(0.5)
    with fleet.http(timeout=10) as client:
        assert client.get("/api/v1/workers").status_code == 200


def hello(worker_id: str) -> Hello:
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id=worker_id,
        session_key=secrets.token_hex(16),
        capabilities=WorkerCapabilities(
            hostname="raw-socket", os="test", python_version="3", task_types=[]
        ),
        slots=1,
    )


@contextlib.contextmanager
def connect_worker(fleet: Fleet, *, max_size: int | None = 2**20) -> Iterator[ClientConnection]:
    """A raw worker socket that has said hello (with its own certificate over TLS);
    ``max_size``: the largest frame it accepts (websockets' default)."""
    worker_id = f"raw-{secrets.token_hex(4)}"
    with connect(fleet.ws_url, ssl=fleet.ssl_context(worker_id), max_size=max_size) as ws:
        ws.send(encode(hello(worker_id)))
        yield ws


def test_an_oversized_frame_closes_the_worker_socket(fleet: Fleet) -> None:
    with connect_worker(fleet, max_size=None) as ws:
        assert isinstance(decode(ws.recv(timeout=30)), Welcome)
        with contextlib.suppress(ConnectionClosed):
            ws.send(b"\x00" * (MAX_FRAME_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == MESSAGE_TOO_BIG
    healthy(fleet)


def test_a_frame_flood_disconnects_the_worker_with_too_many_frames(fleet: Fleet) -> None:
    with connect_worker(fleet) as ws:
        assert isinstance(decode(ws.recv(timeout=30)), Welcome)
        beat = encode(Heartbeat())
        errors: list[Error] = []
        with contextlib.suppress(ConnectionClosed):
            for _ in range(FRAMES_PER_SECOND * 50):
                ws.send(beat)
        with pytest.raises(ConnectionClosed) as closed:
            _collect_errors(ws, errors)
        assert [e.code.value for e in errors] == ["too_many_frames"], errors
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == POLICY_VIOLATION
    healthy(fleet)


def _collect_errors(ws: ClientConnection, errors: list[Error]) -> None:
    """Read until the coordinator closes the socket, keeping its error frames."""
    while True:
        message = decode(ws.recv(timeout=30))
        if isinstance(message, Error):
            errors.append(message)
