"""What a worker socket came with, checked at the upgrade (``worker_credentials.py``):
a worker token against a real store on every connect, a certificate's id and time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from testfleet.coordinator.worker_credentials import (
    certificate_credential,
    is_loopback,
    token_credential,
)
from testfleet.coordinator.worker_identity import (
    CredentialKind,
    IdentityProblem,
    TokenRefusal,
    WorkerCredential,
)
from testfleet.security.pki import BACKDATE, init_ca, issue_worker
from testfleet.security.tokens import IssuedToken, Role, issue_token
from testfleet.store import Store

NOW = 1_800_000_000.0


@pytest.fixture
def store() -> Iterator[Store]:
    with Store(":memory:") as opened:
        yield opened


def stored(store: Store, name: str, role: Role, **kwargs: float) -> IssuedToken:
    issued = issue_token(name, role, NOW, **kwargs)
    store.add_token(issued.record)
    return issued


async def check(
    store: Store,
    header: str | None,
    *,
    encrypted: bool = False,
    peer_host: str | None = "127.0.0.1",
    insecure: bool = False,
) -> tuple[WorkerCredential | None, TokenRefusal | None]:
    return await token_credential(
        store, header, NOW + 1, encrypted=encrypted, peer_host=peer_host, insecure=insecure
    )


async def test_no_header_is_no_token(store: Store) -> None:
    assert await check(store, None) == (None, None)


async def test_a_worker_token_from_loopback_names_its_worker(store: Store) -> None:
    issued = stored(store, "w1", Role.WORKER)
    credential, refusal = await check(store, f"Bearer {issued.secret}")
    assert refusal is None
    assert credential is not None
    assert credential.kind is CredentialKind.TOKEN
    assert credential.worker_id == "w1"
    assert credential.credential_id == issued.record.token_id
    assert credential.issued_at == NOW


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer junk", "tfk_tok-0123456789abcdef_" + "A" * 43]
)
async def test_a_header_that_is_no_testfleet_token_is_refused(store: Store, header: str) -> None:
    credential, refusal = await check(store, header)
    assert credential is None
    assert refusal is not None
    assert refusal.problem is IdentityProblem.BAD_TOKEN
    assert "Bearer tfk_" in refusal.message


async def test_unknown_expired_and_revoked_tokens_are_refused_with_the_reason(
    store: Store,
) -> None:
    unknown = issue_token("w1", Role.WORKER, NOW)  # never stored
    expired = stored(store, "w2", Role.WORKER, expires_in_seconds=1.0)
    revoked = stored(store, "w3", Role.WORKER)
    good = await check(store, f"Bearer {revoked.secret}")
    assert good[1] is None
    store.revoke_token(revoked.record.token_id, NOW)
    for issued, words in (
        (unknown, "not known"),
        (expired, "expired"),
        (revoked, "revoked"),  # refused on the very next connect: nothing is cached
    ):
        credential, refusal = await check(store, f"Bearer {issued.secret}")
        assert credential is None
        assert refusal is not None
        assert refusal.problem is IdentityProblem.BAD_TOKEN
        assert words in refusal.message
        assert refusal.token_id == issued.record.token_id


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SUBMITTER, Role.ADMIN, Role.ENROL])
async def test_a_token_of_another_role_is_refused(store: Store, role: Role) -> None:
    issued = stored(store, "w1", role)
    credential, refusal = await check(store, f"Bearer {issued.secret}")
    assert credential is None
    assert refusal is not None
    assert refusal.problem is IdentityProblem.WRONG_ROLE
    assert f"role {role.value}" in refusal.message
    assert "--role worker" in refusal.message


async def test_over_plain_http_a_token_is_accepted_only_from_loopback(store: Store) -> None:
    header = f"Bearer {stored(store, 'w1', Role.WORKER).secret}"
    credential, refusal = await check(store, header, peer_host="192.0.2.7")
    assert credential is None
    assert refusal is not None
    assert refusal.problem is IdentityProblem.TOKEN_NOT_ON_LOOPBACK
    assert "--insecure" in refusal.message
    assert "TLS" in refusal.message
    remote: dict[str, Any] = {"peer_host": "192.0.2.7"}
    options: dict[str, Any]
    for options in (
        {**remote, "encrypted": True},
        {**remote, "insecure": True},
        {"peer_host": "::1"},
    ):
        credential, refusal = await check(store, header, **options)
        assert refusal is None, options
        assert credential is not None


def test_loopback_is_127_slash_8_and_colon_colon_1() -> None:
    for inside in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1"):
        assert is_loopback(inside), inside
    outside: tuple[str | None, ...] = ("192.0.2.7", "10.0.0.1", "::2", "localhost", "", None)
    for host in outside:
        assert not is_loopback(host), host


def test_a_certificate_names_its_worker_serial_and_not_before(tmp_path: Path) -> None:
    init_ca(tmp_path)
    before = time.time()
    files = issue_worker(tmp_path, "gpu-7")
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    credential = certificate_credential(cert.public_bytes(Encoding.DER))
    assert credential is not None
    assert credential.kind is CredentialKind.CERTIFICATE
    assert credential.worker_id == "gpu-7"
    assert credential.credential_id == format(cert.serial_number, "x")
    # testfleet backdates notBefore (clock skew): a revocation must allow for it.
    backdate = BACKDATE.total_seconds()
    assert before - backdate - 2 <= credential.issued_at <= time.time() - backdate + 1
    assert certificate_credential(None) is None
    assert certificate_credential(b"not a certificate") is None
