"""TLS files and contexts for both ends, and the worker identity a certificate carries.

Callers: ``testfleet coordinator`` checks its ``--tls-cert``/``--tls-key``/
``--client-ca`` with :func:`check_server_files` before anything starts, and
the coordinator's uvicorn startup (``coordinator/app.py``) builds on the same
files; ``testfleet worker`` checks its ``--ca``/``--cert``/``--key`` with
:func:`check_client_files` and connects with :func:`client_context`;
:class:`testfleet.client.FleetClient` verifies an HTTPS coordinator with
:func:`client_context`; the worker channel endpoint reads a worker's id from
its certificate with :func:`worker_id_of_der`.

Every check raises :class:`TlsFileError` with one line that names the flag,
the file and the fix, so the commands print it instead of a traceback.
"""

from __future__ import annotations

import datetime
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from testfleet.security.pki import WORKER_URI_PREFIX

#: Nothing older: TLS 1.0 and 1.1 are deprecated (RFC 8996).
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2


class TlsFileError(Exception):
    """A certificate, key or CA file that cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ServerTlsFiles:
    """The coordinator's TLS files, checked (``client_ca``: workers must present a
    certificate signed by it)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True, slots=True)
class ClientTlsFiles:
    """A worker's or client's TLS files, checked: the CA that signed the coordinator's
    certificate and, for a worker, its own certificate and key."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def check_server_files(cert: Path, key: Path, client_ca: Path | None) -> ServerTlsFiles:
    """The coordinator's files, or :class:`TlsFileError` (``testfleet coordinator``)."""
    _check_pair(cert, key, "--tls-cert", "--tls-key")
    if client_ca is not None:
        load_ca_certificate(client_ca, "--client-ca")
    return ServerTlsFiles(cert, key, client_ca)


def check_client_files(ca: Path | None, cert: Path | None, key: Path | None) -> ClientTlsFiles:
    """A worker's files, or :class:`TlsFileError` (``testfleet worker``)."""
    if (cert is None) != (key is None):
        raise TlsFileError("--cert and --key go together: pass both, or neither")
    if ca is not None:
        load_certificate(ca, "--ca")
    if cert is not None and key is not None:
        _check_pair(cert, key, "--cert", "--key")
    return ClientTlsFiles(ca, cert, key)


def load_certificate(path: Path, flag: str) -> x509.Certificate:
    """The PEM certificate at ``path``, refused if missing, unreadable, junk or out of date."""
    data = _read(path, flag, "certificate")
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TlsFileError(
            f"{flag} {path}: not a PEM certificate; pass the .pem file that "
            "`testfleet certs` wrote (or your PKI's PEM certificate)"
        ) from None
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        raise TlsFileError(
            f"{flag} {path}: the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
            "issue a new one (`testfleet certs ...`)"
        )
    if cert.not_valid_before_utc > now:
        raise TlsFileError(
            f"{flag} {path}: the certificate is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check this machine's clock"
        )
    return cert


def load_ca_certificate(path: Path, flag: str) -> x509.Certificate:
    """:func:`load_certificate`, refused unless it is a CA's (basic constraints CA:TRUE).

    For ``--client-ca`` only: a worker certificate or the server's given there
    by mistake would start a coordinator that refuses every worker's
    certificate with a handshake error far from the cause. (A worker's
    ``--ca`` may be a self-signed server certificate trusted as is.)
    """
    cert = load_certificate(path, flag)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise TlsFileError(
            f"{flag} {path}: not a CA certificate (no CA:TRUE basic constraint); pass the CA "
            "that issued the workers' certificates (`testfleet certs init` wrote it as ca.pem)"
        )
    return cert


def load_private_key(path: Path, flag: str) -> PrivateKeyTypes:
    """The unencrypted PEM key at ``path``, refused if others may read it."""
    data = _read(path, flag, "key")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise TlsFileError(
            f"{flag} {path}: the private key is readable by group or others "
            f"(mode {mode:04o}); run `chmod 600 {path}`"
        )
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise TlsFileError(
            f"{flag} {path}: not an unencrypted PEM private key; pass the .key file that "
            "`testfleet certs` wrote"
        ) from None


def worker_id_of_certificate(cert: x509.Certificate) -> str | None:
    """The worker id a certificate names: its ``testfleet:worker:ID`` URI SAN, else
    its subject's common name (a lab's own PKI); None if neither is there."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    if sans is not None:
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(WORKER_URI_PREFIX):
                return uri[len(WORKER_URI_PREFIX) :]
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        return value if isinstance(value, str) else value.decode()
    return None


def worker_id_of_der(der: bytes) -> str | None:
    """:func:`worker_id_of_certificate` of a DER certificate (what TLS hands over)."""
    try:
        return worker_id_of_certificate(x509.load_der_x509_certificate(der))
    except ValueError:
        return None


def worker_id_of_file(path: Path) -> str:
    """The worker id in the certificate at ``path`` (``testfleet worker --cert``)."""
    worker_id = worker_id_of_certificate(load_certificate(path, "--cert"))
    if worker_id is None:
        raise TlsFileError(
            f"--cert {path}: the certificate names no worker (no {WORKER_URI_PREFIX}ID "
            "SAN, no common name); issue one with `testfleet certs worker`"
        )
    return worker_id


def client_context(files: ClientTlsFiles) -> ssl.SSLContext:
    """A context that verifies the coordinator (with ``files.ca``, else the system's
    CAs) and presents ``files.cert`` when given: the worker's and the client's."""
    context = ssl.create_default_context(cafile=str(files.ca) if files.ca is not None else None)
    context.minimum_version = MINIMUM_TLS_VERSION
    if files.cert is not None:
        context.load_cert_chain(str(files.cert), str(files.key) if files.key else None)
    return context


def harden_server_context(context: ssl.SSLContext) -> None:
    """What the coordinator adds to the context uvicorn builds: TLS 1.2 at least."""
    context.minimum_version = MINIMUM_TLS_VERSION


def _check_pair(cert_path: Path, key_path: Path, cert_flag: str, key_flag: str) -> None:
    cert = load_certificate(cert_path, cert_flag)
    key = load_private_key(key_path, key_flag)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if cert.public_key().public_bytes(encoding, public) != key.public_key().public_bytes(
        encoding, public
    ):
        raise TlsFileError(
            f"{key_flag} {key_path} does not belong to {cert_flag} {cert_path}: pass the key "
            "that was issued with that certificate"
        )


def _read(path: Path, flag: str, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TlsFileError(f"{flag} {path}: no such {what} file; check the path") from None
    except IsADirectoryError:
        raise TlsFileError(f"{flag} {path} is a directory; pass the {what} file") from None
    except PermissionError:
        raise TlsFileError(
            f"{flag} {path}: permission denied; make the {what} file readable by this user"
        ) from None
    except OSError as exc:
        raise TlsFileError(f"{flag} {path}: cannot read it ({exc.strerror})") from None
