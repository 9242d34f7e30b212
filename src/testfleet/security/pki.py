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
from cryptography.hazmat.primitives.asymmetric import ec
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
#: Certificates start a little in the past, so a peer whose clock is behind
#: by a few minutes does not refuse a certificate issued a second ago.
BACKDATE = datetime.timedelta(minutes=5)


class PkiError(Exception):
    """A certificate cannot be issued; the message names the file and the fix."""


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
    files = worker_files(directory, worker_id)
    files.cert.parent.mkdir(parents=True, exist_ok=True)
    _issue(
        directory,
        files,
        common_name=worker_id,
        sans=[x509.UniformResourceIdentifier(WORKER_URI_PREFIX + worker_id)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        days=days,
    )
    return files


def _issue(
    directory: Path,
    files: IssuedFiles,
    *,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> None:
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
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
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(files, cert, key)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    files = ca_files(directory)
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise PkiError(
            f"{exc.filename} not found: create the CA first with "
            f"`testfleet certs init --dir {directory}`"
        ) from None
    except PermissionError as exc:
        raise PkiError(f"cannot read {exc.filename}: permission denied") from None
    except ValueError:
        raise PkiError(f"{files.cert} or {files.key} is not a PEM certificate / key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{files.key}: expected an EC key, as `testfleet certs init` makes")
    return cert, key


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
