"""Who a worker socket may speak for: its credentials, and the rule that admits a hello.

Callers: the worker-channel endpoint (``worker_channel.py``) turns what a
socket came with (a verified TLS client certificate, an ``Authorization:
Bearer`` worker token checked at the upgrade) into
:class:`PresentedCredentials`, and asks :func:`identity_refusal` whether the
socket's ``hello`` may be admitted before the hello reaches the loop; the
coordinator's state asks :func:`revocation_refusal` again when it applies the
hello, since a revoke may land in between. Tests attaching an in-memory
channel pass a :class:`WorkerCredential` of their own. No I/O, no clock: pure
functions with a unit test per case.

The rules (README, "Worker credentials"):

* Every worker needs a credential: a certificate from the coordinator's CA, or
  a worker token (``tokens create --role worker --name ID``). A worker with
  neither is refused, and told both ways to get one.
* A credential names one worker id, and a hello claiming another is refused.
  With both a certificate and a token, the certificate decides, and both
  must name the same id.
* A bearer token that was sent but is not a usable worker token (unknown,
  expired, revoked, another role, or over plain HTTP from a remote peer) is
  refused even beside a good certificate: a worker should not be sending it.
* A revoked worker id admits only credentials issued after the revocation
  (a certificate's ``notBefore``, a token's creation time).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from testfleet.protocol.messages import Hello, ProtocolErrorCode

#: How a worker is told to get a credential (every "no credential" refusal says it).
CREDENTIAL_FIX = (
    "start the worker with --cert/--key from `testfleet certs worker ID`, or with "
    "--token from `testfleet tokens create --role worker --name ID`"
)


class CredentialKind(StrEnum):
    """What vouches for a worker's id."""

    CERTIFICATE = "certificate"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class WorkerCredential:
    """One credential a worker socket came with, once verified."""

    kind: CredentialKind
    #: The worker id it names (a certificate's id; a worker token's name).
    worker_id: str
    #: The certificate's serial (hex) or the token's id: what the audit trail names.
    credential_id: str
    #: When it was issued (a certificate's notBefore, a token's creation), epoch seconds.
    issued_at: float


class IdentityProblem(StrEnum):
    """Why a worker socket was refused (the audit trail's ``reason``)."""

    NO_CREDENTIAL = "no_credential"
    CERTIFICATE_REQUIRED = "certificate_required"
    BAD_TOKEN = "bad_token"
    WRONG_ROLE = "wrong_role"
    TOKEN_NOT_ON_LOOPBACK = "token_not_on_loopback"
    CREDENTIALS_DISAGREE = "credentials_disagree"
    ID_MISMATCH = "id_mismatch"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class TokenRefusal:
    """A bearer token sent on the worker channel that cannot be used, and why."""

    problem: IdentityProblem
    message: str
    #: The token's id when the secret was well formed (never the secret).
    token_id: str | None = None


@dataclass(frozen=True, slots=True)
class PresentedCredentials:
    """Everything a worker socket came with (see the module docstring)."""

    certificate: WorkerCredential | None = None
    token: WorkerCredential | None = None
    #: Set when a bearer token was sent but refused.
    token_refusal: TokenRefusal | None = None

    @classmethod
    def of(cls, credential: WorkerCredential | None) -> PresentedCredentials:
        """One verified credential, in the slot its kind belongs to (tests, the in-memory fleet)."""
        if credential is None:
            return cls()
        if credential.kind is CredentialKind.CERTIFICATE:
            return cls(certificate=credential)
        return cls(token=credential)

    @property
    def certified_id(self) -> str | None:
        return None if self.certificate is None else self.certificate.worker_id


@dataclass(frozen=True, slots=True)
class IdentityRefusal:
    """A hello that cannot be admitted: the error frame's code and message, and
    the reason the audit trail records."""

    problem: IdentityProblem
    message: str
    code: ProtocolErrorCode = ProtocolErrorCode.UNAUTHORIZED


def identity_refusal(
    hello: Hello,
    presented: PresentedCredentials,
    *,
    require_certificate: bool,
    revoked_at: float | None = None,
) -> IdentityRefusal | WorkerCredential:
    """The credential that admits ``hello``, or why it is refused.

    ``require_certificate``: the coordinator runs with ``--client-ca``, so a
    worker token alone is not enough. ``revoked_at``: when an admin revoked
    the id the hello claims (None: never).
    """
    certificate, token = presented.certificate, presented.token
    if certificate is None and require_certificate:
        # First: whatever else it sent, this is what such a worker must fix.
        return IdentityRefusal(
            IdentityProblem.CERTIFICATE_REQUIRED,
            "this coordinator requires a worker certificate: start the worker with "
            "--cert and --key issued by `testfleet certs worker`",
        )
    if presented.token_refusal is not None:
        return IdentityRefusal(presented.token_refusal.problem, presented.token_refusal.message)
    if certificate is not None and token is not None and certificate.worker_id != token.worker_id:
        return IdentityRefusal(
            IdentityProblem.CREDENTIALS_DISAGREE,
            f"the worker certificate is issued to {certificate.worker_id!r} but the worker "
            f"token is for {token.worker_id!r}; pass one worker's credentials",
        )
    credential = certificate or token
    if credential is None:
        return IdentityRefusal(
            IdentityProblem.NO_CREDENTIAL,
            f"worker {hello.worker_id!r} presented no credential; {CREDENTIAL_FIX}",
        )
    if hello.worker_id != credential.worker_id:
        if credential.kind is CredentialKind.CERTIFICATE:
            fix = "drop --worker-id or pass that worker's certificate"
            issued = f"the certificate, which is issued to {credential.worker_id!r}"
        else:
            fix = "pass --worker-id matching the token, or that worker's token"
            issued = f"the worker token, which is for {credential.worker_id!r}"
        return IdentityRefusal(
            IdentityProblem.ID_MISMATCH,
            f"worker id {hello.worker_id!r} does not match {issued}; {fix}",
        )
    return revocation_refusal(credential, revoked_at) or credential


def revocation_refusal(
    credential: WorkerCredential, revoked_at: float | None
) -> IdentityRefusal | None:
    """Why ``credential`` no longer admits its worker, or None: a credential
    issued before its worker id was revoked is refused."""
    if revoked_at is None or credential.issued_at >= revoked_at:
        return None
    if credential.kind is CredentialKind.CERTIFICATE:
        fix = (
            "issue it a new certificate (`testfleet certs worker` backdates notBefore by "
            "5 minutes, so issue it 5 minutes or more after the revocation)"
        )
    else:
        fix = "create it a new token (`testfleet tokens create --role worker`)"
    return IdentityRefusal(
        IdentityProblem.REVOKED,
        f"worker {credential.worker_id!r} was revoked by an admin; its {credential.kind.value} "
        f"was issued before that. To let it back, {fix}",
    )
