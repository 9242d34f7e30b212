"""Secure by default (coordinator/exposure.py): plain HTTP on loopback only, unless
``--insecure``; and what start-up says about how workers authenticate."""

from __future__ import annotations

import pytest

from testfleet.coordinator.exposure import NoticeLevel, decide_exposure, is_loopback


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"],
)
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "", "10.0.0.5", "192.168.1.2", "fe80::1", "coord.lan", "localhost.lan"],
)
def test_every_other_address_is_reachable(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "coord.lan", "::"])
def test_plain_http_beyond_loopback_is_refused_naming_the_flags(host: str) -> None:
    decision = decide_exposure(host, tls=False, client_ca=False, insecure=False)
    assert decision.refusal is not None
    assert f"--host {host} " in decision.refusal
    for flag in ("--tls-cert/--tls-key", "testfleet certs server", "--client-ca", "--insecure"):
        assert flag in decision.refusal
    assert "\n" not in decision.refusal
    assert decision.notices == ()


def test_plain_http_on_loopback_starts_without_warning() -> None:
    decision = decide_exposure("127.0.0.1", tls=False, client_ca=False, insecure=False)
    assert decision.refusal is None
    assert [n.level for n in decision.notices] == [NoticeLevel.INFO]
    assert "from this machine" in decision.notices[0].message


def test_insecure_starts_plain_http_beyond_loopback_and_warns() -> None:
    decision = decide_exposure("0.0.0.0", tls=False, client_ca=False, insecure=True)
    assert decision.refusal is None
    warnings = [n.message for n in decision.notices if n.level is NoticeLevel.WARNING]
    assert len(warnings) == 1
    assert "plain HTTP on 0.0.0.0" in warnings[0]
    assert "unencrypted" in warnings[0]


def test_insecure_warns_on_loopback_too() -> None:
    decision = decide_exposure("127.0.0.1", tls=False, client_ca=False, insecure=True)
    assert decision.refusal is None
    assert [n.level for n in decision.notices] == [NoticeLevel.WARNING, NoticeLevel.INFO]
    assert "from any address" in decision.notices[0].message


def test_tls_beyond_loopback_without_a_client_ca_is_allowed_and_says_workers_use_tokens() -> None:
    decision = decide_exposure("0.0.0.0", tls=True, client_ca=False, insecure=False)
    assert decision.refusal is None
    (notice,) = decision.notices
    assert notice.level is NoticeLevel.INFO
    assert "worker tokens" in notice.message
    assert "no --client-ca" in notice.message


def test_tls_with_a_client_ca_says_workers_use_certificates() -> None:
    decision = decide_exposure("10.0.0.5", tls=True, client_ca=True, insecure=False)
    assert decision.refusal is None
    (notice,) = decision.notices
    assert "certificates from --client-ca" in notice.message
