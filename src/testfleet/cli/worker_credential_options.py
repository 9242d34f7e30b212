"""How ``testfleet worker`` turns its credential flags into what it connects with:
the worker token to send, the certificate enrolled or found in ``--cert-dir``,
and the TLS context with the worker id its certificate names.

Callers: the ``worker`` command (``cli/processes.py``), once at start. Each
problem ends the command with one line naming the flag, never a traceback.
Kept apart from the command so that module holds only the commands' options.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from testfleet.cli.app import errors, fail
from testfleet.security.enrolment import ENROL_TOKEN_ENV


def worker_token(token: str | None, token_file: Path | None, cert: Path | None) -> str | None:
    """The worker token to send: ``--token`` or ``--token-file``; the environment's
    (``$TESTFLEET_TOKEN``, ``$TESTFLEET_TOKEN_FILE``) only for a worker without
    ``--cert``, so that a person's API token in their shell is not sent beside a
    certificate (the coordinator would refuse it). A bad file ends the command."""
    from testfleet.security.credentials import CredentialError, resolve_token

    if cert is not None and not token and token_file is None:
        return None
    try:
        return resolve_token(token, token_file)
    except CredentialError as exc:
        fail(str(exc))


def enrolled_certificate(
    url: str,
    ca: Path | None,
    cert: Path | None,
    cert_dir: Path | None,
    enrol_token: str | None,
    worker_id: str | None,
) -> tuple[Path, Path]:
    """The certificate and key in ``--cert-dir``, enrolled first if not there yet
    (``worker/enrolment.py``); problems end the command in one line."""
    from testfleet.worker.enrolment import EnrolmentError, worker_credentials

    # Read once; no child of this worker (a task) has any use for it.
    os.environ.pop(ENROL_TOKEN_ENV, None)
    if cert_dir is None:
        fail("--enrol-token needs --cert-dir DIR: where this worker keeps the key and certificate")
    if cert is not None:
        fail("give --cert/--key or --cert-dir, not both")
    try:
        found = worker_credentials(
            url, cert_dir, enrol_token=enrol_token, ca=ca, worker_id=worker_id
        )
    except EnrolmentError as exc:
        fail(str(exc))
    if found.enrolled:
        errors.print(f"enrolled as {found.worker_id}: certificate {found.cert} (key {found.key})")
    return found.cert, found.key


def worker_tls(
    url: str, ca: Path | None, cert: Path | None, key: Path | None
) -> tuple[ssl.SSLContext | None, str | None]:
    """The worker's TLS context for an https:// coordinator and the id its certificate
    names; (None, None) over plain HTTP. Bad files end the command in one line."""
    from testfleet.security.tls import (
        TlsFileError,
        check_client_files,
        client_context,
        worker_id_of_file,
    )

    if not url.startswith("https://"):
        if ca is not None or cert is not None:
            fail(f"--ca/--cert need an https:// coordinator; {url} is plain HTTP")
        return None, None
    try:
        files = check_client_files(ca, cert, key)
        certified_id = worker_id_of_file(cert) if cert is not None else None
        context = client_context(files)
    except TlsFileError as exc:
        fail(str(exc))
    except ssl.SSLError as exc:
        fail(f"--cert {cert} / --key {key}: cannot be used for TLS ({exc})")
    return context, certified_id
