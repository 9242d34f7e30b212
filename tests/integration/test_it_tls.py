"""A fleet over TLS with worker certificates, on loopback, under abuse.

One TLS coordinator (``--client-ca``) and one real worker with its certificate
serve the module. Bad peers: plain HTTP on the TLS port, a TLS 1.1-only
client, a worker with no certificate, one with a certificate from another CA,
one with a valid certificate saying hello as another worker. Each is refused,
and the real worker keeps running its tasks throughout.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet
from websockets.exceptions import ConnectionClosed, InvalidMessage
from websockets.sync.client import connect

from testfleet.domain.hardware import WorkerCapabilities
from testfleet.protocol.codec import decode, encode
from testfleet.protocol.messages import PROTOCOL_VERSION, Error, Hello
from testfleet.security.credentials import TOKEN_ENV
from testfleet.security.pki import ca_files, init_ca, issue_worker

pytestmark = [pytest.mark.integration]

REAL_WORKER = "tls-real"
POLICY_VIOLATION = 1008


@dataclass
class TlsFleet:
    fleet: Fleet
    pki: Path

    @property
    def ca(self) -> Path:
        return ca_files(self.pki).cert

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.fleet.port}/api/v1/workers/connect"

    def worker_process(self, worker_id: str, *args: str, seconds: float) -> str:
        """``testfleet worker`` with ``args`` for at most ``seconds``; its output."""
        argv = [sys.executable, "-m", "testfleet", "worker", "-c", self.fleet.url]
        argv += ["--worker-id", worker_id, "--no-probe-torch", "--no-probe-backends", *args]
        try:
            # A worker's environment holds no API token (as LocalFleet starts them).
            env = {k: v for k, v in self.fleet.env().items() if k != TOKEN_ENV}
            done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds, env=env)
            return f"rc={done.returncode}\n{done.stdout}{done.stderr}"
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() + (exc.stderr or b"").decode()
            return f"rc=timeout\n{out}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsFleet]:
    fleet = Fleet(Path(tmp_path_factory.mktemp("tls")), tls=True)
    try:
        fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
        fleet.start_worker(REAL_WORKER, slots=2)
        assert fleet.pki is not None
        yield TlsFleet(fleet, fleet.pki)
    finally:
        fleet.close()


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


def start_real_work(fleet: Fleet, prefix: str) -> list[str]:
    ids = fleet.client.submit(
        [
            {"task_id": f"{prefix}-{n}", "type": "simulated", "config": {"duration_seconds": 1}}
            for n in range(3)
        ]
    )
    fleet.wait_until(
        lambda: any(fleet.task(i)["task"]["status"] == "running" for i in ids),
        60,
        f"a {prefix} task to run on the real worker",
    )
    return ids


def assert_real_work_done(fleet: Fleet, ids: list[str]) -> None:
    for task in fleet.wait_terminal(ids, timeout=60).values():
        assert task["status"] == "completed", task
        assert task["attempts"] == 1, task
        assert task["worker_id"] == REAL_WORKER, task
    (real,) = [w for w in fleet.client.workers() if w["worker_id"] == REAL_WORKER]
    assert real["status"] == "connected"


def test_a_tls_fleet_runs_tasks_end_to_end(tls: TlsFleet) -> None:
    assert tls.fleet.url.startswith("https://")
    ids = tls.fleet.client.submit(
        {"task_id": "tls-command", "type": "command", "config": {"argv": ["echo", "over tls"]}}
    )
    (task,) = tls.fleet.wait_terminal(ids).values()
    assert task["status"] == "completed", task
    assert task["worker_id"] == REAL_WORKER


def test_the_cli_verifies_the_coordinator_with_testfleet_ca(tls: TlsFleet) -> None:
    argv = [sys.executable, "-m", "testfleet", "workers"]
    done = subprocess.run(argv, capture_output=True, text=True, env=tls.fleet.env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert REAL_WORKER in done.stdout
    without_ca = {k: v for k, v in tls.fleet.env().items() if k != "TESTFLEET_CA"}
    done = subprocess.run(argv, capture_output=True, text=True, env=without_ca, timeout=60)
    assert done.returncode == 2
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr or "certificate" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_cli_takes_the_ca_per_command_with_ca(tls: TlsFleet, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    init_ca(other)
    # $TESTFLEET_CA names a CA that did not issue the coordinator's certificate:
    # --ca, given on the command, wins over it.
    env = {**tls.fleet.env(), "TESTFLEET_CA": str(ca_files(other).cert)}
    argv = [sys.executable, "-m", "testfleet", "workers", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "certificate" in done.stderr.lower()
    done = subprocess.run(
        [*argv, "--ca", str(tls.ca)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert REAL_WORKER in done.stdout
    missing = tmp_path / "missing-ca.pem"
    done = subprocess.run(
        [*argv, "--ca", str(missing)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(missing) in line
    assert "no such file or directory" in line


def test_plain_http_on_the_tls_port_is_refused(tls: TlsFleet) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls.fleet.port}/api/v1/health", timeout=10)
    assert tls.fleet.client.health()["status"] == "ok"


def test_a_tls_1_1_client_is_refused(tls: TlsFleet) -> None:
    context = ssl.create_default_context(cafile=str(tls.ca))
    # Python warns that TLS 1.0/1.1 are deprecated: that is the point here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        # Security level 0 lets this side's OpenSSL offer TLS 1.1 at all (its
        # default level refuses to, and the test would then prove nothing about
        # the coordinator): the refusal below is the coordinator's own alert.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with (
            socket.create_connection(("127.0.0.1", tls.fleet.port), timeout=10) as raw,
            pytest.raises(ssl.SSLError) as refused,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            pass
    # The ClientHello went out and the coordinator refused it: with an alert,
    # or (asyncio's TLS layer) by closing. This side refusing to offer TLS 1.1
    # would be NO_PROTOCOLS_AVAILABLE / UNSUPPORTED_PROTOCOL instead.
    assert refused.value.reason in (
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "UNEXPECTED_EOF_WHILE_READING",
    ), refused.value
    # Control: the same client allowed TLS 1.2 completes its handshake.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", tls.fleet.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as secured,
    ):
        assert secured.version() == "TLSv1.2"


def test_a_worker_without_a_certificate_is_refused(tls: TlsFleet) -> None:
    ids = start_real_work(tls.fleet, "no-cert")
    out = tls.worker_process("no-cert", "--ca", str(tls.ca), seconds=60)
    assert out.startswith("rc=2"), out
    assert "requires a worker certificate" in out
    assert "Traceback" not in out
    assert "no-cert" not in {w["worker_id"] for w in tls.fleet.client.workers()}
    assert_real_work_done(tls.fleet, ids)


def test_a_certificate_from_another_ca_fails_the_handshake(tls: TlsFleet, tmp_path: Path) -> None:
    ids = start_real_work(tls.fleet, "other-ca")
    other = tmp_path / "other-pki"
    init_ca(other)
    files = issue_worker(other, REAL_WORKER)
    context = ssl.create_default_context(cafile=str(tls.ca))
    context.load_cert_chain(files.cert, files.key)
    # TLS 1.3: the client finishes its half first, so the refusal (an
    # unknown_ca alert) surfaces on the first read.
    with (  # noqa: PT012 - the refusal may come at the open or at the first read
        pytest.raises((ssl.SSLError, ConnectionClosed, InvalidMessage, OSError)),
        connect(tls.ws_url, ssl=context, open_timeout=10) as ws,
    ):
        ws.send(encode(hello(REAL_WORKER)))
        ws.recv(timeout=10)
    # The worker command names it as a refused certificate and keeps retrying.
    out = tls.worker_process(
        REAL_WORKER,
        *("--ca", str(tls.ca), "--cert", str(files.cert), "--key", str(files.key)),
        seconds=6,
    )
    assert "refused this worker's certificate" in out, out
    assert_real_work_done(tls.fleet, ids)


def test_a_valid_certificate_claiming_another_workers_id_is_refused(tls: TlsFleet) -> None:
    ids = start_real_work(tls.fleet, "impostor")
    files = issue_worker(tls.pki, "impostor")
    context = ssl.create_default_context(cafile=str(tls.ca))
    context.load_cert_chain(files.cert, files.key)
    with connect(tls.ws_url, ssl=context, open_timeout=10) as ws:
        ws.send(encode(hello(REAL_WORKER)))
        frame = ws.recv(timeout=30)
        message = decode(frame)
        assert isinstance(message, Error), message
        assert message.code.value == "unauthorized"
        assert "issued to 'impostor'" in message.message
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == POLICY_VIOLATION
    assert "impostor" in tls.fleet.tail("coordinator")
    assert_real_work_done(tls.fleet, ids)
