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
from typing import TYPE_CHECKING

from testfleet.cli.app import errors, fail, resolve_coordinator
from testfleet.domain.enums import Codec
from testfleet.security.enrolment import ENROL_TOKEN_ENV

if TYPE_CHECKING:
    from testfleet.protocol.channel import Connector


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


def worker_addresses(coordinator: str | None) -> tuple[str, str]:
    """``--coordinator`` as the agent's address list, and the address to enrol at.

    Each entry is checked: ``http(s)://`` (or the channel's own ``ws(s)://``,
    taken as the same address) is normalised as every command does, and
    ``grpc(s)://HOST:PORT`` (a coordinator's ``--grpc-port``) is kept as it
    is. Enrolment is an HTTP request, so it goes to the first HTTP address
    (the local default when only gRPC ones are given). Problems end the command
    in one line.
    """
    from testfleet.protocol.channel import AddressError
    from testfleet.worker.transports import is_grpc_address

    if coordinator is None:
        url = resolve_coordinator(None)
        return url, url.split(",")[0]
    entries = [part.strip() for part in coordinator.split(",")]
    checked: list[str] = []
    for entry in entries:
        if is_grpc_address(entry):
            # Imported only for gRPC addresses: loading grpc costs a WebSocket worker time.
            from testfleet.protocol.grpc_frames import grpc_target

            try:
                grpc_target(entry)
            except AddressError as exc:
                fail(f"--coordinator: {exc}")
            checked.append(entry)
        else:
            if entry.startswith(("ws://", "wss://")):
                # The worker channel's own scheme, as the issue writes it: same address.
                entry = "http" + entry[2:]
            checked.extend(resolve_coordinator(entry).split(","))
    http = [entry for entry in checked if not is_grpc_address(entry)]
    return ",".join(dict.fromkeys(checked)), (http[0] if http else resolve_coordinator(None))


def worker_connector(
    url: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    token: str | None,
    codec: Codec = Codec.JSON,
) -> tuple[Connector, str | None]:
    """The connector the agent reaches ``url``'s addresses with (WebSocket, and
    gRPC for ``grpc(s)://`` ones), and the worker id the certificate names.
    ``--codec protobuf`` needs every address to be a gRPC one (a WebSocket
    frame is text or bytes)."""
    from testfleet.worker.transports import SchemeConnector, is_grpc_address
    from testfleet.worker.websocket_channel import WebSocketConnector

    entries = url.split(",")
    if codec is Codec.PROTOBUF and not all(is_grpc_address(entry) for entry in entries):
        fail(
            "--codec protobuf travels over gRPC only: give grpc(s):// coordinator addresses "
            "(the coordinator's --grpc-port), or --codec msgpack for the WebSocket"
        )
    https = next((entry for entry in entries if entry.startswith("https://")), None)
    grpcs = any(entry.startswith("grpcs://") for entry in entries)
    context, certified_id = worker_tls(https or entries[0], ca, cert, key, also_grpcs=grpcs)
    grpc = None
    if any(is_grpc_address(entry) for entry in entries):
        from testfleet.worker.grpc_channel import GrpcConnector, GrpcTls

        tls = GrpcTls(
            root_certificates=ca.read_bytes() if ca is not None else None,
            certificate_chain=cert.read_bytes() if cert is not None else None,
            private_key=key.read_bytes() if key is not None else None,
        )
        grpc = GrpcConnector(tls=tls if grpcs else None, token=token)
    return SchemeConnector(WebSocketConnector(ssl_context=context, token=token), grpc), certified_id


def worker_tls(
    url: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    *,
    also_grpcs: bool = False,
) -> tuple[ssl.SSLContext | None, str | None]:
    """The worker's TLS context for an https:// coordinator and the id its certificate
    names; (None, None) over plain HTTP. Bad files end the command in one line.
    ``also_grpcs``: a ``grpcs://`` address is listed too, so the files are needed
    (and checked here) even when no HTTP address is encrypted."""
    from testfleet.security.tls import (
        TlsFileError,
        check_client_files,
        client_context,
        worker_id_of_file,
    )

    if not url.startswith("https://") and not also_grpcs:
        if ca is not None or cert is not None:
            fail(f"--ca/--cert need an https:// or grpcs:// coordinator; {url} is plain")
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
