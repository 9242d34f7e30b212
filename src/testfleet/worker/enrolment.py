"""A worker's certificate from an enrolment token: ``testfleet worker --enrol-token
SECRET --cert-dir DIR``.

Callers: the ``worker`` command (``cli/processes.py``), before it connects.
:func:`worker_credentials` either finds the certificate and key a previous
start saved in DIR (and then never sends the token again: it was used), or
enrols: makes an EC P-256 key here, sends only a certificate signing request
to ``POST /api/v1/workers/enrol`` with the token as bearer, and saves what
comes back as ``DIR/<worker id>.pem`` beside ``DIR/<worker id>.key``. The
worker then connects with them exactly as with ``--cert``/``--key``.

Decisions:

* The private key never leaves this machine and is written mode 0600 from
  the start (``os.open`` with the mode), in a folder made 0700.
* Enrolment is refused over plain ``http://`` except to a loopback address:
  the token would cross the network in clear, and anyone on the path could
  use it first.
* The worker id is the coordinator's answer (the token's name). It becomes a
  file name here, so it is checked against the worker-id rule first; and the
  certificate must be for the key just made and name that id, or nothing is
  saved.
* The key is saved only once the certificate came back, and the certificate
  after the key (through a temporary file and a rename): a DIR that holds
  ``ID.pem`` always holds its key too.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from testfleet.client import FleetClient, FleetError
from testfleet.loopback import is_loopback_host
from testfleet.security.enrolment import ENROL_TOKEN_ENV
from testfleet.security.pki import PkiError, check_worker_id
from testfleet.security.tls import worker_id_of_certificate

#: The CSR's subject: informational only, the coordinator names the worker.
CSR_SUBJECT = "testfleet worker enrolment"


class EnrolmentError(Exception):
    """Enrolment cannot go on; the message is one line naming the flag or file and the fix."""


@dataclass(frozen=True, slots=True)
class WorkerCredentials:
    """A worker's certificate and key on disk, and the worker id the certificate names."""

    worker_id: str
    cert: Path
    key: Path
    #: Whether they were made by this start (enrolled) rather than found.
    enrolled: bool = False


def worker_credentials(
    url: str,
    cert_dir: Path,
    *,
    enrol_token: str | None,
    ca: Path | None,
    worker_id: str | None = None,
    client: FleetClient | None = None,
) -> WorkerCredentials:
    """The certificate and key in ``cert_dir`` (for ``worker_id`` when given), or
    new ones enrolled at ``url`` with ``enrol_token``; :class:`EnrolmentError`
    when neither can be had. ``client`` replaces the HTTP client (tests)."""
    saved = saved_credentials(cert_dir, worker_id)
    if saved is not None:
        return saved
    if not enrol_token:
        which = f" for {worker_id!r}" if worker_id else ""
        raise EnrolmentError(
            f"--cert-dir {cert_dir} holds no certificate{which} yet: pass --enrol-token "
            f"(or set {ENROL_TOKEN_ENV}) to enrol this worker, or --cert/--key"
        )
    check_enrolment_url(url)
    if client is None:
        with FleetClient(url, ca=ca, token=enrol_token) as own:
            credentials = enrol(cert_dir, own)
    else:
        credentials = enrol(cert_dir, client)
    if worker_id is not None and worker_id != credentials.worker_id:
        raise EnrolmentError(
            f"--worker-id {worker_id!r} conflicts with the enrolment token, made for "
            f"{credentials.worker_id!r} (its certificate is saved in {cert_dir}); "
            "a worker's id is the one in its certificate: drop --worker-id"
        )
    return credentials


def saved_credentials(cert_dir: Path, worker_id: str | None = None) -> WorkerCredentials | None:
    """The certificate and key a previous enrolment saved in ``cert_dir`` (for
    ``worker_id``, else the only pair there), or None if there is none yet."""
    if not cert_dir.exists():
        return None
    if not cert_dir.is_dir():
        raise EnrolmentError(f"--cert-dir {cert_dir} is not a directory; pass a folder")
    if worker_id is not None:
        try:
            check_worker_id(worker_id)
        except PkiError as exc:
            raise EnrolmentError(f"--worker-id: {exc}") from None
    pattern = "*.pem" if worker_id is None else f"{worker_id}.pem"
    try:
        certs = sorted(cert_dir.glob(pattern))
    except OSError as exc:
        raise EnrolmentError(f"--cert-dir {cert_dir}: cannot read it ({exc.strerror})") from None
    if not certs:
        return None
    if len(certs) > 1:
        ids = ", ".join(cert.stem for cert in certs)
        raise EnrolmentError(
            f"--cert-dir {cert_dir} holds certificates of several workers ({ids}); "
            "pass --worker-id to pick one"
        )
    cert = certs[0]
    key = cert.with_suffix(".key")
    if not key.exists():
        raise EnrolmentError(
            f"--cert-dir {cert_dir}: {cert.name} has no key {key.name} beside it; "
            "restore the key, or remove the certificate and enrol again with a new token"
        )
    return WorkerCredentials(cert.stem, cert, key)


def check_enrolment_url(url: str) -> None:
    """Refuse to send an enrolment token over plain HTTP beyond loopback."""
    parts = urlsplit(url)
    if parts.scheme == "https" or is_loopback_host(parts.hostname):
        return
    raise EnrolmentError(
        f"--enrol-token needs an https:// coordinator: {url} is plain HTTP, and the token "
        "would cross the network in clear (plain http:// is allowed on loopback only)"
    )


def enrol(cert_dir: Path, client: FleetClient) -> WorkerCredentials:
    """Make a key, have ``client`` (which sends the enrolment token) trade its CSR
    for a certificate, and save both in ``cert_dir``."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CSR_SUBJECT)]))
        .sign(key, hashes.SHA256())
    )
    try:
        answer = client.enrol_worker(csr.public_bytes(serialization.Encoding.PEM).decode())
    except FleetError as exc:
        raise EnrolmentError(f"enrolment refused: {exc.message}") from None
    worker_id = str(answer["worker_id"])
    try:
        check_worker_id(worker_id)
        cert = x509.load_pem_x509_certificate(str(answer["certificate"]).encode())
    except (PkiError, ValueError) as exc:
        raise EnrolmentError(f"the coordinator's enrolment answer is unusable: {exc}") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise EnrolmentError("the coordinator's certificate is not for the key this worker sent")
    if worker_id_of_certificate(cert) != worker_id:
        raise EnrolmentError(
            f"the coordinator's certificate does not name worker {worker_id!r}, as it said"
        )
    return _save(cert_dir, worker_id, cert, key)


def _save(
    cert_dir: Path, worker_id: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> WorkerCredentials:
    cert_path, key_path = cert_dir / f"{worker_id}.pem", cert_dir / f"{worker_id}.key"
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        cert_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A leftover key (a start that died before saving its certificate) is
        # replaced, never appended to: removed, and made anew with mode 0600.
        key_path.unlink(missing_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key_bytes)
        partial = cert_path.with_name(cert_path.name + ".part")
        partial.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        partial.replace(cert_path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            key_path.unlink(missing_ok=True)
        raise EnrolmentError(
            f"--cert-dir {cert_dir}: cannot save the certificate ({exc.strerror}); make the "
            "folder writable by this user and enrol again with a new token"
        ) from None
    return WorkerCredentials(worker_id, cert_path, key_path, enrolled=True)
