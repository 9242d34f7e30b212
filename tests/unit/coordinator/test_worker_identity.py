"""A worker's id is the one in its certificate (``workers.identity_refusal``)."""

from __future__ import annotations

import secrets

from testfleet.coordinator.workers import identity_refusal
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


def test_the_certificates_own_id_is_admitted() -> None:
    assert identity_refusal(hello("w1"), "w1", required=True) is None


def test_another_id_than_the_certificates_is_refused() -> None:
    refusal = identity_refusal(hello("w2"), "w1", required=True)
    assert refusal is not None
    assert refusal.code is ProtocolErrorCode.UNAUTHORIZED
    assert "'w2'" in refusal.message
    assert "issued to 'w1'" in refusal.message
    # Even where certificates are optional, a certificate binds its id.
    assert identity_refusal(hello("w2"), "w1", required=False) is not None


def test_no_certificate_is_refused_only_where_one_is_required() -> None:
    refusal = identity_refusal(hello("w1"), None, required=True)
    assert refusal is not None
    assert refusal.code is ProtocolErrorCode.UNAUTHORIZED
    assert "--cert" in refusal.message
    assert identity_refusal(hello("w1"), None, required=False) is None
