"""The small CA (security/pki.py) and the TLS file checks (security/tls.py)."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from testfleet.security.pki import (
    PkiError,
    ca_files,
    init_ca,
    issue_server,
    issue_worker,
)
from testfleet.security.tls import (
    TlsFileError,
    check_client_files,
    check_server_files,
    worker_id_of_certificate,
    worker_id_of_file,
)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_ca(directory)
    return directory


def test_the_ca_is_ec_p256_with_a_private_key_file(pki: Path) -> None:
    files = ca_files(pki)
    cert = load(files.cert)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert mode(files.key) == 0o600


def test_an_existing_ca_is_kept_unless_forced(pki: Path) -> None:
    before = ca_files(pki).cert.read_bytes()
    with pytest.raises(PkiError, match="--force"):
        init_ca(pki)
    assert ca_files(pki).cert.read_bytes() == before
    init_ca(pki, force=True)
    assert ca_files(pki).cert.read_bytes() != before
    assert mode(ca_files(pki).key) == 0o600


def test_a_server_certificate_has_server_auth_and_its_names(pki: Path) -> None:
    files = issue_server(pki, ["fleet.lan", "coord"], ["10.0.0.5", "::1"])
    cert = load(files.cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["fleet.lan", "coord"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.issuer == load(ca_files(pki).cert).subject
    assert mode(files.key) == 0o600


def test_a_server_certificate_defaults_to_loopback(pki: Path) -> None:
    cert = load(issue_server(pki).cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def test_a_junk_ip_is_refused(pki: Path) -> None:
    with pytest.raises(PkiError, match="not an IP address"):
        issue_server(pki, [], ["fleet.lan"])


def test_a_worker_certificate_names_the_worker_for_client_auth(pki: Path) -> None:
    files = issue_worker(pki, "gpu-7")
    cert = load(files.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gpu-7"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["testfleet:worker:gpu-7"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now <= datetime.timedelta(days=366)
    assert mode(files.key) == 0o600
    assert worker_id_of_certificate(cert) == "gpu-7"
    assert worker_id_of_file(files.cert) == "gpu-7"


@pytest.mark.parametrize("worker_id", ["", "a/b", "a b", "../x", "x" * 129])
def test_a_worker_id_the_channel_refuses_gets_no_certificate(pki: Path, worker_id: str) -> None:
    with pytest.raises(PkiError, match="a worker id is"):
        issue_worker(pki, worker_id)


def test_issuing_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="testfleet certs init"):
        issue_worker(tmp_path / "none", "w1")


def test_the_common_name_names_a_worker_of_another_pki(pki: Path) -> None:
    cert = load(issue_server(pki, ["w9"], []).cert)
    assert worker_id_of_certificate(cert) == "w9"


# ------------------------------------------------------------ the file checks


def expired_copy(pki: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A worker certificate signed by ``pki``'s CA that expired yesterday."""
    ca_key = serialization.load_pem_private_key(ca_files(pki).key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")]))
        .issuer_name(load(ca_files(pki).cert).subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now - datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "old.pem", tmp_path / "old.key"
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


def test_good_server_and_client_files_pass(pki: Path) -> None:
    server = issue_server(pki)
    worker = issue_worker(pki, "w1")
    ca = ca_files(pki).cert
    assert check_server_files(server.cert, server.key, ca).client_ca == ca
    assert check_client_files(ca, worker.cert, worker.key).cert == worker.cert


def test_a_missing_certificate_is_named(pki: Path, tmp_path: Path) -> None:
    server = issue_server(pki)
    with pytest.raises(TlsFileError, match=r"--tls-cert .*nope\.pem: no such certificate file"):
        check_server_files(tmp_path / "nope.pem", server.key, None)


def test_a_directory_is_not_a_key(pki: Path) -> None:
    server = issue_server(pki)
    with pytest.raises(TlsFileError, match="is a directory"):
        check_server_files(server.cert, pki, None)


def test_a_key_others_can_read_is_refused_with_chmod_advice(pki: Path) -> None:
    server = issue_server(pki)
    server.key.chmod(0o644)
    with pytest.raises(TlsFileError, match=r"chmod 600 .*server\.key") as refused:
        check_server_files(server.cert, server.key, None)
    assert "0644" in str(refused.value)


def test_a_key_of_another_certificate_is_refused(pki: Path) -> None:
    server = issue_server(pki)
    worker = issue_worker(pki, "w1")
    with pytest.raises(TlsFileError, match="does not belong to"):
        check_server_files(server.cert, worker.key, None)
    with pytest.raises(TlsFileError, match=r"--key .* does not belong to --cert"):
        check_client_files(None, worker.cert, server.key)


def test_an_expired_certificate_is_refused(pki: Path, tmp_path: Path) -> None:
    cert, key = expired_copy(pki, tmp_path)
    with pytest.raises(TlsFileError, match="expired on"):
        check_client_files(None, cert, key)


def test_junk_is_not_a_certificate_or_key(pki: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    junk.chmod(0o600)
    with pytest.raises(TlsFileError, match="not a PEM certificate"):
        check_client_files(junk, None, None)
    with pytest.raises(TlsFileError, match="not an unencrypted PEM private key"):
        check_server_files(issue_server(pki).cert, junk, None)


def test_cert_and_key_go_together(pki: Path) -> None:
    worker = issue_worker(pki, "w1")
    with pytest.raises(TlsFileError, match="go together"):
        check_client_files(None, worker.cert, None)
