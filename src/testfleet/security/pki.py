"""A small certificate authority: the CA, the coordinator's certificate, workers' certificates.

Callers: ``testfleet certs init|server|worker`` (``cli/certs.py``) and
:class:`testfleet.local_fleet.LocalFleet` when it runs a fleet over TLS. A lab
with its own PKI never calls this: it hands the coordinator and workers its
own files, which :mod:`testfleet.security.tls` checks the same way.

Decisions:

- EC P-256 keys with SHA-256 signatures: small, fast handshakes, accepted by
  every TLS stack testfleet meets.
- Private keys are written with mode 0600 from the start (``os.open`` with the
  mode, never a chmod after the bytes are on disk), and a CA is never
  overwritten unless asked (``force``): replacing it silently would orphan
  every certificate issued from it.
- A worker's identity is its worker id, in the subject's common name and in
  a URI subject alternative name ``testfleet:worker:ID``
  (:data:`WORKER_URI_PREFIX`). The coordinator reads the URI SAN first and
  falls back to the common name only for certificates without one (a lab's
  own PKI), see :func:`testfleet.security.tls.worker_id_of_certificate`.
- Layout under the directory: ``ca.pem`` / ``ca.key``, ``server.pem`` /
  ``server.key``, ``workers/ID.pem`` / ``workers/ID.key``.
- A worker enrolled online (``coordinator/enrolment_api.py``) gets a
  certificate made by the same function as one issued offline
  (:func:`_sign`): only where its key was made differs (on the worker, sent
  as a CSR, for :func:`sign_worker_csr`). A CSR's own subject and extensions
  are ignored: what it may name is the enrolment token's business, not the
  requester's.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The URI SAN that names a worker: ``testfleet:worker:<worker id>``.
WORKER_URI_PREFIX = "testfleet:worker:"
#: The worker ids the worker channel accepts (``protocol/messages.py``'s
#: ``WorkerId``); a certificate for any other id could never say hello.
WORKER_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
WORKER_ID_RULE = "a worker id is 1 to 128 letters, digits and . _ : @ -"

CA_DAYS = 3650
SERVER_DAYS = 825
WORKER_DAYS = 365
#: The smallest RSA key a CSR may carry (EC keys must be on P-256).
MIN_RSA_BITS = 2048
#: A PEM CSR longer than this is refused unread (an EC or 4096-bit RSA one is
#: under 2 KiB; the enrol route bounds its body by it).
MAX_CSR_BYTES = 16 * 1024
#: Certificates start a little in the past, so a peer whose clock is behind
#: by a few minutes does not refuse a certificate issued a second ago.
BACKDATE = datetime.timedelta(minutes=5)


class PkiError(Exception):
    """A certificate cannot be issued; the message names the file and the fix."""


class CsrError(PkiError):
    """A certificate signing request that cannot be signed; the message says why."""


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA loaded from its folder (:func:`load_ca`): what signs certificates."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    directory: Path

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True, slots=True)
class IssuedFiles:
    """Where a certificate and its key were written."""

    cert: Path
    key: Path


def ca_files(directory: Path) -> IssuedFiles:
    return IssuedFiles(directory / "ca.pem", directory / "ca.key")


def server_files(directory: Path) -> IssuedFiles:
    return IssuedFiles(directory / "server.pem", directory / "server.key")


def worker_files(directory: Path, worker_id: str) -> IssuedFiles:
    return IssuedFiles(
        directory / "workers" / f"{worker_id}.pem", directory / "workers" / f"{worker_id}.key"
    )


def check_worker_id(worker_id: str) -> str:
    """``worker_id`` if the worker channel accepts it, else :class:`PkiError`."""
    if WORKER_ID_PATTERN.fullmatch(worker_id) is None:
        raise PkiError(f"worker id {worker_id!r}: {WORKER_ID_RULE}")
    return worker_id


def init_ca(directory: Path, *, force: bool = False, days: int = CA_DAYS) -> IssuedFiles:
    """Create a CA in ``directory``; refuse to replace an existing one unless ``force``."""
    files = ca_files(directory)
    if not force and (files.cert.exists() or files.key.exists()):
        raise PkiError(
            f"{files.cert} already exists: a new CA would invalidate every certificate "
            "issued from it; pass --force to replace it, or use another --dir"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "testfleet CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(files, cert, key)
    return files


def issue_server(
    directory: Path,
    dns_names: list[str] | None = None,
    ip_addresses: list[str] | None = None,
    *,
    days: int = SERVER_DAYS,
) -> IssuedFiles:
    """The coordinator's certificate (serverAuth) for these names; default localhost
    and 127.0.0.1. Raises :class:`PkiError` for an address that is not one."""
    dns_names = list(dns_names or [])
    ip_addresses = list(ip_addresses or [])
    if not dns_names and not ip_addresses:
        dns_names, ip_addresses = ["localhost"], ["127.0.0.1"]
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    for text in ip_addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            raise PkiError(
                f"--ip {text!r} is not an IP address; pass a host name with --dns"
            ) from None
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    files = server_files(directory)
    _issue(
        directory,
        files,
        common_name=common_name,
        sans=sans,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
    )
    return files


def issue_worker(directory: Path, worker_id: str, *, days: int = WORKER_DAYS) -> IssuedFiles:
    """A worker's certificate (clientAuth) naming ``worker_id`` (see the module docstring)."""
    check_worker_id(worker_id)
    ca = load_ca(directory)
    files = worker_files(directory, worker_id)
    files.cert.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    _write(files, worker_certificate(ca, key.public_key(), worker_id, days=days), key)
    return files


def worker_certificate(
    ca: CertificateAuthority,
    public_key: CertificateIssuerPublicKeyTypes,
    worker_id: str,
    *,
    days: int = WORKER_DAYS,
    not_before: datetime.datetime | None = None,
) -> x509.Certificate:
    """The certificate that makes ``public_key`` worker ``worker_id``: the one recipe
    for both :func:`issue_worker` (offline) and :func:`sign_worker_csr` (enrolment).

    ``not_before``: the earliest start of its validity; the enrol route passes
    the second after the id's revocation, since a revoked id admits only
    certificates valid from after it (``coordinator/worker_identity.py``), and
    the usual backdating for clock skew would otherwise start it earlier."""
    check_worker_id(worker_id)
    return _sign(
        ca,
        public_key,
        common_name=worker_id,
        sans=[x509.UniformResourceIdentifier(WORKER_URI_PREFIX + worker_id)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        days=days,
        not_before=not_before,
    )


def load_csr(pem: str | bytes) -> x509.CertificateSigningRequest:
    """A PEM CSR that may be signed, or :class:`CsrError` saying what is wrong:
    too long, not a PEM CSR, or what :func:`csr_key` refuses."""
    data = pem.encode() if isinstance(pem, str) else pem
    if len(data) > MAX_CSR_BYTES:
        raise CsrError(f"the CSR is {len(data)} bytes; a CSR is at most {MAX_CSR_BYTES}")
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError:
        raise CsrError(
            "not a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----)"
        ) from None
    csr_key(csr)
    return csr


def csr_key(csr: x509.CertificateSigningRequest) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The key ``csr`` asks a certificate for, or :class:`CsrError`: a self-signature
    that does not verify (the requester does not hold the key), or a key weaker
    than EC P-256 or RSA 2048."""
    try:
        key = csr.public_key()
        signed = csr.is_signature_valid
    except (ValueError, TypeError) as exc:  # an unsupported key or signature algorithm
        raise CsrError(f"the CSR's key or signature cannot be read: {exc}") from None
    if not signed:
        raise CsrError("the CSR's signature does not verify: it was not signed by its own key")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise CsrError(f"the CSR's EC key is on {key.curve.name}; use P-256 (secp256r1)")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrError(
                f"the CSR's RSA key has {key.key_size} bits; use at least {MIN_RSA_BITS} "
                "(or EC P-256)"
            )
        return key
    raise CsrError(f"the CSR's key is {type(key).__name__}; use EC P-256 or RSA >= 2048")


def sign_worker_csr(
    ca_dir: Path,
    csr: x509.CertificateSigningRequest,
    worker_id: str,
    *,
    days: int = WORKER_DAYS,
) -> x509.Certificate:
    """A worker certificate for ``worker_id`` on the key of ``csr`` (checked with
    :func:`csr_key`), signed by the CA in ``ca_dir``. Whatever the CSR names
    itself is ignored (see the module docstring)."""
    return worker_certificate(load_ca(ca_dir), csr_key(csr), worker_id, days=days)


def _issue(
    directory: Path,
    files: IssuedFiles,
    *,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> None:
    ca = load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(ca, key.public_key(), common_name=common_name, sans=sans, usage=usage, days=days)
    _write(files, cert, key)


def _sign(
    ca: CertificateAuthority,
    public_key: CertificateIssuerPublicKeyTypes,
    *,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
    not_before: datetime.datetime | None = None,
) -> x509.Certificate:
    """The one signing step of every leaf certificate (server or worker)."""
    now = _now()
    start = now - BACKDATE if not_before is None else max(now - BACKDATE, not_before)
    not_after = min(now + datetime.timedelta(days=days), ca.cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                # RSA keys exchange keys by encipherment in TLS 1.2's RSA suites;
                # EC keys never do.
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )


def load_ca(directory: Path) -> CertificateAuthority:
    """The CA in ``directory``, or :class:`PkiError` naming the file and the fix
    (``testfleet coordinator --enrol-ca-dir`` checks its folder with this at start-up)."""
    files = ca_files(directory)
    init = f"`testfleet certs init --dir {directory}`"
    if not directory.is_dir():
        raise PkiError(
            f"{directory} is not a directory holding a CA (ca.pem, ca.key); make one with {init}"
        )
    data: dict[Path, bytes] = {}
    for path in (files.cert, files.key):
        try:
            data[path] = path.read_bytes()
        except FileNotFoundError:
            raise PkiError(f"{path} not found: create the CA first with {init}") from None
        except PermissionError:
            raise PkiError(
                f"cannot read {path}: permission denied; run this as the user that owns it"
            ) from None
        except OSError as exc:
            raise PkiError(f"cannot read {path}: {exc.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificate(data[files.cert])
    except ValueError:
        raise PkiError(f"{files.cert} is not a PEM certificate; make the CA with {init}") from None
    try:
        key = serialization.load_pem_private_key(data[files.key], password=None)
    except (ValueError, TypeError):
        raise PkiError(
            f"{files.key} is not an unencrypted PEM private key; make the CA with {init}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{files.key}: expected an EC key, as `testfleet certs init` makes")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise PkiError(f"{files.key} does not belong to {files.cert}: restore the CA's own key")
    return CertificateAuthority(cert, key, directory)


def enrolment_ca(directory: Path, client_ca: Path | None) -> tuple[CertificateAuthority, Path]:
    """The CA in ``directory`` that signs enrolling workers' certificates, and the
    client CA file the coordinator verifies workers with: ``client_ca`` if given
    (it must hold this CA, or no enrolled worker could connect), else the CA's own
    ``ca.pem``. :class:`PkiError` naming the file and the fix otherwise.
    Caller: ``testfleet coordinator --enrol-ca-dir`` at start-up."""
    ca = load_ca(directory)
    if client_ca is None:
        return ca, ca_files(directory).cert
    try:
        trusted = x509.load_pem_x509_certificates(client_ca.read_bytes())
    except (OSError, ValueError):
        # Unreadable or junk: the --client-ca check names it (tls.check_server_files).
        return ca, client_ca
    if ca.cert not in trusted:
        raise PkiError(
            f"--client-ca {client_ca} does not hold the CA of --enrol-ca-dir {directory}: "
            "workers enrolled with it would be refused; pass --client-ca "
            f"{ca_files(directory).cert} (or leave --client-ca out)"
        )
    return ca, client_ca


def _write(files: IssuedFiles, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    files.key.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Replace, never append: an old key file keeps its inode's mode, so it is
    # removed first and the new one is created 0600.
    files.key.unlink(missing_ok=True)
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
