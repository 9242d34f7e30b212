"""What a worker socket came with: its TLS client certificate and its bearer token, checked.

Callers: the worker-channel endpoint (:func:`~testfleet.coordinator.worker_channel.serve_worker`)
calls :func:`presented_credentials` at the WebSocket upgrade, before it
accepts; what it returns is judged at the hello by
:func:`~testfleet.coordinator.worker_identity.identity_refusal`, so that a
refused worker reads why in an error frame instead of a bare HTTP 403.

Decisions:

* The token's row is read from the store on every connect (no cache, unlike
  the REST routes' :class:`~testfleet.coordinator.auth.Auth`): a worker
  connects rarely, and a revoked token must be refused on its next connect
  whatever else this process remembers. The check itself is the REST one
  (:meth:`TokenRecord.check <testfleet.security.tokens.TokenRecord.check>`:
  hash in constant time, revocation, expiry).
* Over plain HTTP a worker token crosses the network in the clear, so it is
  accepted only from a loopback peer (127.0.0.0/8, ::1) unless the operator
  set ``insecure`` (``--insecure``) on purpose.
"""

from __future__ import annotations

import asyncio

from cryptography import x509

from testfleet.coordinator.worker_identity import (
    CredentialKind,
    IdentityProblem,
    PresentedCredentials,
    TokenRefusal,
    WorkerCredential,
)
from testfleet.loopback import is_loopback_address as is_loopback
from testfleet.security.tls import worker_id_of_certificate
from testfleet.security.tokens import Role, TokenCheck, token_id_of
from testfleet.store.contract import SecurityStore

_TOKEN_PROBLEMS = {
    TokenCheck.UNKNOWN: "is not known to this coordinator",
    TokenCheck.WRONG_SECRET: "is not known to this coordinator",
    TokenCheck.EXPIRED: "has expired; create the worker a new one",
    TokenCheck.REVOKED: "was revoked; create the worker a new one",
}
_WORKER_TOKEN_HOW = "`testfleet tokens create --role worker --name WORKER_ID`"


def certificate_credential(der: bytes | None) -> WorkerCredential | None:
    """The worker credential in a verified client certificate (DER), or None when
    there is none or it names no worker."""
    if der is None:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    worker_id = worker_id_of_certificate(cert)
    if worker_id is None:
        return None
    return WorkerCredential(
        kind=CredentialKind.CERTIFICATE,
        worker_id=worker_id,
        credential_id=format(cert.serial_number, "x"),
        issued_at=cert.not_valid_before_utc.timestamp(),
    )


async def token_credential(
    store: SecurityStore,
    authorization: str | None,
    now: float,
    *,
    encrypted: bool,
    peer_host: str | None,
    insecure: bool,
) -> tuple[WorkerCredential | None, TokenRefusal | None]:
    """The worker token in an ``Authorization`` header value, checked: (credential,
    None) when it is usable, (None, why) when one was sent but is not, (None,
    None) when none was sent. ``encrypted``: the socket is TLS."""
    if authorization is None:
        return None, None
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    token_id = token_id_of(secret) if scheme.lower() == "bearer" else None
    if token_id is None:
        return None, TokenRefusal(
            IdentityProblem.BAD_TOKEN,
            "the Authorization header is not a testfleet bearer token (Bearer tfk_...); "
            f"pass the worker's token from {_WORKER_TOKEN_HOW}",
        )
    record = await asyncio.to_thread(store.get_token, token_id)
    verdict = TokenCheck.UNKNOWN if record is None else record.check(secret, now)
    if record is None or verdict is not TokenCheck.VALID:
        return None, TokenRefusal(
            IdentityProblem.BAD_TOKEN, f"the worker token {_TOKEN_PROBLEMS[verdict]}", token_id
        )
    if record.role is not Role.WORKER:
        return None, TokenRefusal(
            IdentityProblem.WRONG_ROLE,
            f"token {record.name!r} has role {record.role.value}; the worker channel takes "
            f"only worker tokens: {_WORKER_TOKEN_HOW}",
            token_id,
        )
    if not encrypted and not insecure and not is_loopback(peer_host):
        return None, TokenRefusal(
            IdentityProblem.TOKEN_NOT_ON_LOOPBACK,
            "a worker token over plain HTTP is accepted only from this machine (loopback): "
            "serve the coordinator over TLS (--tls-cert/--tls-key) and connect with https://, "
            "or start the coordinator with --insecure",
            token_id,
        )
    credential = WorkerCredential(
        kind=CredentialKind.TOKEN,
        worker_id=record.name,
        credential_id=record.token_id,
        issued_at=record.created,
    )
    return credential, None


async def presented_credentials(
    store: SecurityStore,
    *,
    certificate_der: bytes | None,
    authorization: str | None,
    now: float,
    encrypted: bool,
    peer_host: str | None,
    insecure: bool,
) -> PresentedCredentials:
    """Everything a worker socket came with, checked (see the module docstring)."""
    token, refusal = await token_credential(
        store, authorization, now, encrypted=encrypted, peer_host=peer_host, insecure=insecure
    )
    return PresentedCredentials(
        certificate=certificate_credential(certificate_der), token=token, token_refusal=refusal
    )
