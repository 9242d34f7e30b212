"""Start-up refusals of ``testfleet coordinator`` and ``testfleet worker``: plain HTTP
beyond loopback, and every bad TLS or key file, each one line naming the file or
flag and the fix, exit code 2, never a traceback, and before anything is bound.

(``test_cli_tls.py`` covers a missing certificate, a key others can read and a
key of another certificate; this covers the rest of the issue's "Bad input".)
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.security.pki import ca_files, init_ca, issue_server, issue_worker

DAY = datetime.timedelta(days=1)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_ca(directory)
    issue_server(directory)
    issue_worker(directory, "w1")
    return directory


def run(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(app, list(args))
    assert "Traceback" not in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    return done.exit_code, done.output


def one_error_line(output: str) -> str:
    """The ``error:`` line; it must be the only line the refusal printed."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    return lines[0]


def coordinator(tmp_path: Path, *extra: str) -> tuple[int, str]:
    return run("coordinator", "--db", str(tmp_path / "c.duckdb"), "--port", "1", *extra)


def signed(
    pki: Path, tmp_path: Path, name: str, *, start: datetime.timedelta, end: datetime.timedelta
) -> tuple[Path, Path]:
    """A certificate for worker ``name`` from ``pki``'s CA, valid from now+start to
    now+end, and its key (mode 600)."""
    ca_key = serialization.load_pem_private_key(ca_files(pki).key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca_files(pki).cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + start)
        .not_valid_after(now + end)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# ------------------------------------------------------------ secure by default


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5"])
def test_plain_http_beyond_loopback_is_refused_naming_the_flags(tmp_path: Path, host: str) -> None:
    code, output = coordinator(tmp_path, "--host", host)
    assert code == 2
    line = one_error_line(output)
    assert f"--host {host} " in line
    for flag in ("--tls-cert/--tls-key", "testfleet certs server", "--client-ca", "--insecure"):
        assert flag in line
    assert not (tmp_path / "c.duckdb").exists()


def test_insecure_gets_past_the_refusal(tmp_path: Path) -> None:
    # A name that cannot resolve: binding fails next, so nothing is served,
    # and the error shows the exposure check let it through.
    code, output = coordinator(tmp_path, "--host", "no-such-host.invalid", "--insecure")
    assert code == 2
    line = one_error_line(output)
    assert "cannot resolve it" in line
    assert "--insecure" not in line


def test_tls_beyond_loopback_without_a_client_ca_is_not_refused(pki: Path, tmp_path: Path) -> None:
    tls = ("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"))
    code, output = coordinator(tmp_path, "--host", "no-such-host.invalid", *tls)
    assert code == 2
    assert "cannot resolve it" in one_error_line(output)


# ------------------------------------------------------------ the coordinator's files


def tls_flags(cert: Path, key: Path, *extra: str) -> tuple[str, ...]:
    return ("--tls-cert", str(cert), "--tls-key", str(key), *extra)


def test_the_coordinator_refuses_an_expired_certificate(pki: Path, tmp_path: Path) -> None:
    cert, key = signed(pki, tmp_path, "old", start=-10 * DAY, end=-DAY)
    code, output = coordinator(tmp_path, *tls_flags(cert, key))
    assert code == 2
    line = one_error_line(output)
    assert f"--tls-cert {cert}: the certificate expired on" in line
    assert "issue a new one" in line


def test_the_coordinator_refuses_a_certificate_not_yet_valid(pki: Path, tmp_path: Path) -> None:
    cert, key = signed(pki, tmp_path, "early", start=2 * DAY, end=10 * DAY)
    code, output = coordinator(tmp_path, *tls_flags(cert, key))
    assert code == 2
    line = one_error_line(output)
    assert f"--tls-cert {cert}: the certificate is not valid before" in line
    assert "clock" in line


def test_the_coordinator_refuses_a_directory_as_its_key(pki: Path, tmp_path: Path) -> None:
    code, output = coordinator(tmp_path, *tls_flags(pki / "server.pem", pki))
    assert code == 2
    assert f"--tls-key {pki} is a directory; pass the key file" in one_error_line(output)


def test_the_coordinator_refuses_a_missing_key(pki: Path, tmp_path: Path) -> None:
    code, output = coordinator(tmp_path, *tls_flags(pki / "server.pem", pki / "gone.key"))
    assert code == 2
    assert "gone.key: no such key file; check the path" in one_error_line(output)


def test_the_coordinator_refuses_a_missing_client_ca(pki: Path, tmp_path: Path) -> None:
    flags = tls_flags(pki / "server.pem", pki / "server.key", "--client-ca", str(pki / "x.pem"))
    code, output = coordinator(tmp_path, *flags)
    assert code == 2
    assert "--client-ca" in one_error_line(output)
    assert "x.pem: no such certificate file" in output


def test_the_coordinator_refuses_a_client_ca_that_is_no_ca(pki: Path, tmp_path: Path) -> None:
    leaf = pki / "workers" / "w1.pem"
    flags = tls_flags(pki / "server.pem", pki / "server.key", "--client-ca", str(leaf))
    code, output = coordinator(tmp_path, *flags)
    assert code == 2
    line = one_error_line(output)
    assert f"--client-ca {leaf}: not a CA certificate" in line
    assert "ca.pem" in line


def test_the_coordinator_refuses_junk_as_a_certificate(pki: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    code, output = coordinator(tmp_path, *tls_flags(junk, pki / "server.key"))
    assert code == 2
    assert "not a PEM certificate" in one_error_line(output)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666])
def test_the_coordinator_refuses_a_db_key_file_others_can_read(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "db.key"
    key_file.write_text("0123456789abcdef0123456789abcdef\n")
    key_file.chmod(mode)
    code, output = coordinator(tmp_path, "--db-key-file", str(key_file))
    assert code == 2
    line = one_error_line(output)
    assert str(key_file) in line
    assert f"chmod 600 {key_file}" in line
    assert not (tmp_path / "c.duckdb").exists()


def test_the_coordinator_refuses_a_missing_db_key_file(tmp_path: Path) -> None:
    code, output = coordinator(tmp_path, "--db-key-file", str(tmp_path / "none.key"))
    assert code == 2
    line = one_error_line(output)
    assert "none.key" in line
    assert "does not exist; create one with" in line


# ------------------------------------------------------------ the worker's files

WORKER = ("worker", "-c", "https://127.0.0.1:1", "--no-probe-torch")


def test_the_worker_refuses_an_expired_certificate(pki: Path, tmp_path: Path) -> None:
    cert, key = signed(pki, tmp_path, "w-old", start=-10 * DAY, end=-DAY)
    code, output = run(*WORKER, "--cert", str(cert), "--key", str(key))
    assert code == 2
    assert f"--cert {cert}: the certificate expired on" in one_error_line(output)


def test_the_worker_refuses_a_certificate_not_yet_valid(pki: Path, tmp_path: Path) -> None:
    cert, key = signed(pki, tmp_path, "w-early", start=2 * DAY, end=10 * DAY)
    code, output = run(*WORKER, "--cert", str(cert), "--key", str(key))
    assert code == 2
    assert f"--cert {cert}: the certificate is not valid before" in one_error_line(output)


def test_the_worker_refuses_an_expired_ca(pki: Path, tmp_path: Path) -> None:
    old_ca, _ = signed(pki, tmp_path, "old-ca", start=-10 * DAY, end=-DAY)
    code, output = run(*WORKER, "--ca", str(old_ca))
    assert code == 2
    assert f"--ca {old_ca}: the certificate expired on" in one_error_line(output)


def test_the_worker_refuses_a_missing_key(pki: Path) -> None:
    cert = pki / "workers" / "w1.pem"
    code, output = run(*WORKER, "--cert", str(cert), "--key", str(pki / "nope.key"))
    assert code == 2
    assert "--key" in one_error_line(output)
    assert "nope.key: no such key file" in output


def test_the_worker_refuses_a_directory_as_its_certificate(pki: Path) -> None:
    code, output = run(*WORKER, "--cert", str(pki), "--key", str(pki / "workers" / "w1.key"))
    assert code == 2
    assert f"--cert {pki} is a directory" in one_error_line(output)
