"""The worker's side of enrolment (worker/enrolment.py) against a real app in-process:
a key made here, a CSR sent, the certificate saved; found again on the next start."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from testfleet.cli.app import app as cli_app
from testfleet.client import FleetClient
from testfleet.coordinator.app import create_app
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.pki import init_ca, load_ca
from testfleet.security.tls import check_client_files, worker_id_of_file
from testfleet.security.tokens import Role
from testfleet.worker.enrolment import (
    EnrolmentError,
    WorkerCredentials,
    check_enrolment_url,
    saved_credentials,
    worker_credentials,
)


def through(app_client: TestClient) -> httpx.MockTransport:
    """Each request handed to the in-process app, its answer copied back."""

    def handle(request: httpx.Request) -> httpx.Response:
        answer = app_client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.content
        )
        headers = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        }
        return httpx.Response(answer.status_code, headers=headers, content=answer.content)

    return httpx.MockTransport(handle)


@dataclass
class Coordinator:
    app_client: TestClient
    tokens: dict[str, str]
    #: Requests the coordinator received.
    requests: list[str]

    def client(self, token: str) -> FleetClient:
        transport = through(self.app_client)

        def counting(request: httpx.Request) -> httpx.Response:
            self.requests.append(f"{request.method} {request.url.path}")
            return transport.handle_request(request)

        return FleetClient(
            "http://testserver", token=token, transport=httpx.MockTransport(counting)
        )


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    path = tmp_path / "w.duckdb"
    tokens = {
        name: create_token_in_file(path, name, Role.ENROL, expires_in_seconds=3600).secret
        for name in ("gpu-7", "gpu-8")
    }
    init_ca(tmp_path / "pki")
    with TestClient(create_app(path, enrolment_ca=load_ca(tmp_path / "pki"))) as app_client:
        yield Coordinator(app_client, tokens, [])


def enrol(
    coordinator: Coordinator, cert_dir: Path, who: str = "gpu-7", worker_id: str | None = None
) -> WorkerCredentials:
    secret = coordinator.tokens[who]
    return worker_credentials(
        "https://fleet.lan:8700",
        cert_dir,
        enrol_token=secret,
        ca=None,
        worker_id=worker_id,
        client=coordinator.client(secret),
    )


def test_enrolment_saves_a_private_key_and_the_certificate_named_by_the_token(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    cert_dir = tmp_path / "creds"
    found = worker_credentials(
        "https://fleet.lan:8700",
        cert_dir,
        enrol_token=coordinator.tokens["gpu-7"],
        ca=None,
        client=coordinator.client(coordinator.tokens["gpu-7"]),
    )
    assert found.enrolled
    assert (found.worker_id, found.cert, found.key) == (
        "gpu-7",
        cert_dir / "gpu-7.pem",
        cert_dir / "gpu-7.key",
    )
    assert stat.S_IMODE(found.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_dir.stat().st_mode) == 0o700
    assert worker_id_of_file(found.cert) == "gpu-7"
    # Usable exactly as --cert/--key: the key is the certificate's.
    assert check_client_files(None, found.cert, found.key).cert == found.cert
    assert sorted(p.name for p in cert_dir.iterdir()) == ["gpu-7.key", "gpu-7.pem"]
    # The key never left: only a CSR went out.
    key_pem = found.key.read_bytes()
    assert b"PRIVATE KEY" in key_pem
    assert coordinator.requests == ["POST /api/v1/workers/enrol"]


def test_the_next_start_uses_what_was_saved_and_never_resends_the_token(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    cert_dir = tmp_path / "creds"
    first = enrol(coordinator, cert_dir)
    again = worker_credentials(
        "https://fleet.lan:8700",
        cert_dir,
        enrol_token=coordinator.tokens["gpu-7"],
        ca=None,
        client=coordinator.client(coordinator.tokens["gpu-7"]),
    )
    assert again == saved_credentials(cert_dir)
    assert not again.enrolled
    assert (again.cert, again.key) == (first.cert, first.key)
    assert coordinator.requests == ["POST /api/v1/workers/enrol"]  # once, the first time
    # Without the token too; and by its id.
    no_token = worker_credentials("https://x", cert_dir, enrol_token=None, ca=None)
    assert no_token.worker_id == "gpu-7"
    named = worker_credentials("https://x", cert_dir, enrol_token=None, ca=None, worker_id="gpu-7")
    assert named.cert == cert_dir / "gpu-7.pem"


def test_a_used_token_is_refused_in_one_line(coordinator: Coordinator, tmp_path: Path) -> None:
    enrol(coordinator, tmp_path / "one")
    with pytest.raises(EnrolmentError, match="enrolment refused: enrolment token already used"):
        enrol(coordinator, tmp_path / "two")
    assert not (tmp_path / "two").exists()


def test_a_worker_id_other_than_the_tokens_is_a_clear_error(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    with pytest.raises(EnrolmentError, match="--worker-id 'cpu-1' conflicts with the enrolment"):
        enrol(coordinator, tmp_path / "creds", worker_id="cpu-1")
    # What was enrolled is kept for the worker the token named.
    assert saved_credentials(tmp_path / "creds") is not None


def test_an_empty_dir_and_no_token_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(EnrolmentError, match="holds no certificate yet: pass --enrol-token"):
        worker_credentials("https://x", tmp_path, enrol_token=None, ca=None)


def test_a_dir_with_several_workers_or_a_lost_key_is_named(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    cert_dir = tmp_path / "creds"
    enrol(coordinator, cert_dir, "gpu-7")
    # Another worker's token into the same folder: only when told which worker.
    assert enrol(coordinator, cert_dir, "gpu-8").worker_id == "gpu-7"
    enrol(coordinator, cert_dir, "gpu-8", worker_id="gpu-8")
    with pytest.raises(EnrolmentError, match=r"several workers \(gpu-7, gpu-8\); pass --worker-id"):
        saved_credentials(cert_dir)
    assert saved_credentials(cert_dir, "gpu-8") is not None
    (cert_dir / "gpu-8.key").unlink()
    with pytest.raises(EnrolmentError, match=r"gpu-8\.pem has no key gpu-8\.key"):
        saved_credentials(cert_dir, "gpu-8")
    with pytest.raises(EnrolmentError, match=r"--worker-id: worker id .*: a worker id is"):
        saved_credentials(cert_dir, "../etc")
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(EnrolmentError, match="is not a directory"):
        saved_credentials(afile)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://fleet.lan:8700", True),
        ("http://127.0.0.1:8700", True),
        ("http://localhost:8700", True),
        ("http://[::1]:8700", True),
        ("http://fleet.lan:8700", False),
        ("http://10.0.0.5:8700", False),
    ],
)
def test_plain_http_is_refused_for_enrolment_beyond_loopback(url: str, allowed: bool) -> None:
    if allowed:
        check_enrolment_url(url)
        return
    with pytest.raises(EnrolmentError, match="needs an https:// coordinator"):
        check_enrolment_url(url)


def test_a_junk_answer_saves_nothing(tmp_path: Path) -> None:
    def handle(_: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"certificate": "junk", "ca": "junk", "worker_id": "../../etc/passwd"}
        )

    client = FleetClient("https://x", token="t", transport=httpx.MockTransport(handle))
    with pytest.raises(EnrolmentError, match=r"answer is unusable: worker id .*: a worker id is"):
        worker_credentials("https://x", tmp_path / "c", enrol_token="t", ca=None, client=client)
    assert not (tmp_path / "c").exists()


def test_a_certificate_for_another_key_saves_nothing(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    other = enrol(coordinator, tmp_path / "other", "gpu-8")
    pem = other.cert.read_text()

    def handle(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"certificate": pem, "ca": pem, "worker_id": "gpu-8"})

    client = FleetClient("https://x", token="t", transport=httpx.MockTransport(handle))
    with pytest.raises(EnrolmentError, match="not for the key this worker sent"):
        worker_credentials("https://x", tmp_path / "c", enrol_token="t", ca=None, client=client)
    assert not (tmp_path / "c").exists()
    assert x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.PEM)


# ------------------------------------------------------ the worker command's flags


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--enrol-token", "tfk_x"], "--enrol-token needs --cert-dir DIR"),
        (
            ["--enrol-token", "tfk_x", "--cert-dir", "D", "--cert", "c.pem", "--key", "k"],
            "give --cert/--key or --cert-dir, not both",
        ),
        (["--cert-dir", "{empty}"], "holds no certificate yet: pass --enrol-token"),
        (
            ["--enrol-token", "tfk_x", "--cert-dir", "{empty}", "-c", "http://fleet.lan:8700"],
            "needs an https:// coordinator",
        ),
    ],
)
def test_the_worker_commands_enrolment_flags_fail_in_one_line(
    tmp_path: Path, args: list[str], said: str
) -> None:
    args = [a.replace("{empty}", str(tmp_path)) for a in args]
    if "-c" not in args:
        args += ["-c", "https://127.0.0.1:9"]
    done = CliRunner().invoke(cli_app, ["worker", *args], env={"TESTFLEET_ENROL_TOKEN": ""})
    assert done.exit_code == 2, done.output
    assert said in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.output
