"""Signing an enrolling worker's CSR (security/pki.py): the same certificate as
``certs worker`` makes, for the token's worker id, whatever the CSR says."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from testfleet.security.pki import (
    CsrError,
    PkiError,
    ca_files,
    enrolment_ca,
    init_ca,
    issue_worker,
    load_ca,
    load_csr,
    sign_worker_csr,
)
from testfleet.security.tls import worker_id_of_certificate


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_ca(directory)
    return directory


def make_csr(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    *,
    common_name: str = "evil-admin",
    san: str | None = "testfleet:worker:someone-else",
) -> x509.CertificateSigningRequest:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def test_the_certificate_names_the_tokens_worker_not_what_the_csr_says(pki: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sign_worker_csr(pki, make_csr(key), "gpu-7")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gpu-7"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["testfleet:worker:gpu-7"]
    assert worker_id_of_certificate(cert) == "gpu-7"
    assert "evil-admin" not in cert.subject.rfc4514_string()
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # On the requester's key, signed by the CA.
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    ca = load_ca(pki)
    assert cert.issuer == ca.cert.subject
    cert.verify_directly_issued_by(ca.cert)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def test_an_enrolled_certificate_is_made_as_certs_worker_makes_one(pki: Path) -> None:
    offline = x509.load_pem_x509_certificate(issue_worker(pki, "w1").cert.read_bytes())
    enrolled = sign_worker_csr(pki, make_csr(), "w1")
    assert offline.subject == enrolled.subject
    assert offline.issuer == enrolled.issuer
    assert [e.value for e in offline.extensions] == [e.value for e in enrolled.extensions]
    lifetime = offline.not_valid_after_utc - offline.not_valid_before_utc
    assert abs(lifetime - (enrolled.not_valid_after_utc - enrolled.not_valid_before_utc)) < (
        datetime.timedelta(minutes=1)
    )


def test_an_rsa_2048_csr_is_signed_with_key_encipherment(pki: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = sign_worker_csr(pki, load_csr(pem(make_csr(key))), "rsa-box")
    assert worker_id_of_certificate(cert) == "rsa-box"
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_a_csr_with_a_bad_signature_is_refused(pki: Path) -> None:
    # A CSR whose self-signature was made by another key: its requester does
    # not hold the key it asks a certificate for.
    mine = make_csr(rsa.generate_private_key(public_exponent=65537, key_size=2048), san=None)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged_signature = other.sign(mine.tbs_certrequest_bytes, padding.PKCS1v15(), hashes.SHA256())
    der = mine.public_bytes(serialization.Encoding.DER)
    assert der.endswith(mine.signature)
    forged = x509.load_der_x509_csr(der[: -len(mine.signature)] + forged_signature)
    assert not forged.is_signature_valid
    with pytest.raises(CsrError, match="signature does not verify"):
        load_csr(pem(forged))
    with pytest.raises(CsrError, match="signature does not verify"):
        sign_worker_csr(pki, forged, "w1")


@pytest.mark.parametrize(
    ("key", "said"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "1024 bits"),
        (ec.generate_private_key(ec.SECP384R1()), "secp384r1; use P-256"),
    ],
    ids=["rsa-1024", "ec-p384"],
)
def test_a_weak_or_unexpected_key_is_refused(
    pki: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, said: str
) -> None:
    with pytest.raises(CsrError, match=said):
        load_csr(pem(make_csr(key)))
    with pytest.raises(CsrError, match=said):
        sign_worker_csr(pki, make_csr(key), "w1")


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"hello",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ],
)
def test_junk_is_not_a_csr(junk: bytes) -> None:
    with pytest.raises(CsrError, match="not a PEM certificate signing request"):
        load_csr(junk)


def test_an_oversized_csr_is_refused_unread() -> None:
    with pytest.raises(CsrError, match="at most"):
        load_csr(b"x" * 100_000)


def test_a_worker_id_no_channel_accepts_gets_no_certificate(pki: Path) -> None:
    with pytest.raises(PkiError, match="a worker id is"):
        sign_worker_csr(pki, make_csr(), "../etc")


# ------------------------------------------------ the CA folder at start-up


def test_a_missing_ca_folder_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=r"not a directory holding a CA.*testfleet certs init"):
        load_ca(tmp_path / "nope")


def test_a_missing_ca_key_is_named(pki: Path) -> None:
    ca_files(pki).key.unlink()
    with pytest.raises(PkiError, match=r"ca\.key not found"):
        load_ca(pki)


def test_an_unreadable_ca_key_is_named(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As if mode 000 (chmod alone proves nothing where the tests run as root).
    read_bytes = Path.read_bytes

    def refuse_the_key(path: Path) -> bytes:
        if path.name == "ca.key":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse_the_key)
    with pytest.raises(PkiError, match=r"cannot read .*ca\.key: permission denied"):
        load_ca(pki)


def test_a_ca_key_of_another_ca_is_refused(pki: Path, tmp_path: Path) -> None:
    init_ca(tmp_path / "other")
    ca_files(pki).key.unlink()
    ca_files(tmp_path / "other").key.rename(ca_files(pki).key)
    with pytest.raises(PkiError, match=r"ca\.key does not belong to .*ca\.pem"):
        load_ca(pki)


def test_junk_in_the_ca_files_is_named(pki: Path) -> None:
    ca_files(pki).cert.write_text("junk")
    with pytest.raises(PkiError, match=r"ca\.pem is not a PEM certificate"):
        load_ca(pki)


def test_the_enrolment_ca_is_the_client_ca_unless_one_is_given(pki: Path, tmp_path: Path) -> None:
    ca, client_ca = enrolment_ca(pki, None)
    assert ca.directory == pki
    assert client_ca == ca_files(pki).cert
    # A bundle that holds it is fine; one that does not would refuse every enrolled worker.
    init_ca(tmp_path / "other")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca_files(tmp_path / "other").cert.read_bytes() + client_ca.read_bytes())
    assert enrolment_ca(pki, bundle)[1] == bundle
    with pytest.raises(PkiError, match="does not hold the CA of --enrol-ca-dir"):
        enrolment_ca(pki, ca_files(tmp_path / "other").cert)
