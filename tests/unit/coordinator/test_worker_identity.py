"""Who a worker socket may speak for (``worker_identity.identity_refusal``): every case."""

from __future__ import annotations

import secrets

import pytest

from testfleet.coordinator.worker_identity import (
    CredentialKind,
    IdentityProblem,
    IdentityRefusal,
    PresentedCredentials,
    TokenRefusal,
    WorkerCredential,
    identity_refusal,
    revocation_refusal,
)
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.protocol.messages import PROTOCOL_VERSION, Hello, ProtocolErrorCode


def hello(worker_id: str) -> Hello:
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id=worker_id,
        session_key=secrets.token_hex(16),
        capabilities=WorkerCapabilities(hostname="h", os="test", python_version="3"),
        slots=1,
    )


def cert(worker_id: str, issued_at: float = 100.0) -> WorkerCredential:
    return WorkerCredential(CredentialKind.CERTIFICATE, worker_id, "1a2b", issued_at)


def token(worker_id: str, issued_at: float = 100.0) -> WorkerCredential:
    return WorkerCredential(CredentialKind.TOKEN, worker_id, "tok-0123456789abcdef", issued_at)


def certified(worker_id: str | None) -> PresentedCredentials:
    return PresentedCredentials(certificate=None if worker_id is None else cert(worker_id))


def refused(outcome: IdentityRefusal | WorkerCredential) -> IdentityRefusal:
    assert isinstance(outcome, IdentityRefusal), outcome
    assert outcome.code is ProtocolErrorCode.UNAUTHORIZED
    return outcome


def test_the_certificates_own_id_is_admitted() -> None:
    outcome = identity_refusal(hello("w1"), certified("w1"), require_certificate=True)
    assert outcome == cert("w1")


def test_another_id_than_the_certificates_is_refused() -> None:
    refusal = refused(identity_refusal(hello("w2"), certified("w1"), require_certificate=True))
    assert refusal.problem is IdentityProblem.ID_MISMATCH
    assert "'w2'" in refusal.message
    assert "issued to 'w1'" in refusal.message
    # Even where certificates are optional, a certificate binds its id.
    refused(identity_refusal(hello("w2"), certified("w1"), require_certificate=False))


def test_no_certificate_is_refused_where_one_is_required_even_with_a_token() -> None:
    refusal = refused(identity_refusal(hello("w1"), certified(None), require_certificate=True))
    assert refusal.problem is IdentityProblem.CERTIFICATE_REQUIRED
    assert "--cert" in refusal.message
    with_token = PresentedCredentials(token=token("w1"))
    refusal = refused(identity_refusal(hello("w1"), with_token, require_certificate=True))
    assert refusal.problem is IdentityProblem.CERTIFICATE_REQUIRED


def test_no_credential_at_all_is_refused_naming_both_fixes() -> None:
    refusal = refused(identity_refusal(hello("w1"), certified(None), require_certificate=False))
    assert refusal.problem is IdentityProblem.NO_CREDENTIAL
    assert "'w1'" in refusal.message
    assert "--cert/--key" in refusal.message
    assert "testfleet certs worker" in refusal.message
    assert "--token" in refusal.message
    assert "tokens create --role worker" in refusal.message


def test_a_worker_token_admits_its_own_id_only() -> None:
    presented = PresentedCredentials(token=token("w1"))
    assert identity_refusal(hello("w1"), presented, require_certificate=False) == token("w1")
    refusal = refused(identity_refusal(hello("w2"), presented, require_certificate=False))
    assert refusal.problem is IdentityProblem.ID_MISMATCH
    assert "the worker token, which is for 'w1'" in refusal.message
    assert "--worker-id" in refusal.message


@pytest.mark.parametrize(
    "problem",
    [
        IdentityProblem.BAD_TOKEN,
        IdentityProblem.WRONG_ROLE,
        IdentityProblem.TOKEN_NOT_ON_LOOPBACK,
    ],
)
def test_a_refused_token_is_refused_even_beside_a_good_certificate(
    problem: IdentityProblem,
) -> None:
    presented = PresentedCredentials(
        certificate=cert("w1"), token_refusal=TokenRefusal(problem, f"because {problem}", "tok-x")
    )
    refusal = refused(identity_refusal(hello("w1"), presented, require_certificate=False))
    assert refusal.problem is problem
    assert refusal.message == f"because {problem}"


def test_with_a_certificate_and_a_token_the_certificate_decides() -> None:
    both = PresentedCredentials(certificate=cert("w1"), token=token("w1"))
    assert identity_refusal(hello("w1"), both, require_certificate=True) == cert("w1")
    disagree = PresentedCredentials(certificate=cert("w1"), token=token("w2"))
    refusal = refused(identity_refusal(hello("w1"), disagree, require_certificate=False))
    assert refusal.problem is IdentityProblem.CREDENTIALS_DISAGREE
    assert "'w1'" in refusal.message
    assert "'w2'" in refusal.message


def test_a_revoked_id_refuses_credentials_issued_before_the_revocation() -> None:
    for credential in (cert("w1", issued_at=100.0), token("w1", issued_at=100.0)):
        presented = PresentedCredentials.of(credential)
        refusal = refused(
            identity_refusal(hello("w1"), presented, require_certificate=False, revoked_at=150.0)
        )
        assert refusal.problem is IdentityProblem.REVOKED
        assert "revoked" in refusal.message
        # Issued at or after the revocation: admitted again.
        assert (
            identity_refusal(hello("w1"), presented, require_certificate=False, revoked_at=100.0)
            == credential
        )
    # Another id's revocation does not matter.
    assert identity_refusal(
        hello("w1"), certified("w1"), require_certificate=False, revoked_at=None
    ) == cert("w1")


def test_the_revocation_message_says_how_to_let_the_worker_back() -> None:
    by_cert = revocation_refusal(cert("w1", 100.0), 150.0)
    assert by_cert is not None
    assert "5 minutes" in by_cert.message
    by_token = revocation_refusal(token("w1", 100.0), 150.0)
    assert by_token is not None
    assert "tokens create --role worker" in by_token.message
    assert revocation_refusal(cert("w1", 200.0), 150.0) is None
    assert revocation_refusal(cert("w1", 100.0), None) is None


def test_presented_credentials_of_puts_a_credential_in_its_slot() -> None:
    assert PresentedCredentials.of(None) == PresentedCredentials()
    assert PresentedCredentials.of(cert("w1")).certified_id == "w1"
    assert PresentedCredentials.of(token("w1")).token == token("w1")
    assert PresentedCredentials.of(token("w1")).certified_id is None
