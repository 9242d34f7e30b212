"""What a worker says when TLS fails (``connection_report.describe_tls_failure``)."""

from __future__ import annotations

import ssl

import pytest
from websockets.exceptions import InvalidMessage

from testfleet.worker.connection_report import describe_connection_failure

URL = "wss://fleet.lan:8700/api/v1/workers/connect"


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    exc.verify_code = code
    exc.verify_message = message
    return exc


@pytest.mark.parametrize(
    ("exc", "phrase"),
    [
        (verify_error(20, "unable to get local issuer certificate"), "unknown CA; pass"),
        (verify_error(19, "self-signed certificate in certificate chain"), "unknown CA"),
        (verify_error(62, "Hostname mismatch"), "not valid for 'fleet.lan' (hostname mismatch)"),
        (verify_error(10, "certificate has expired"), "certificate has expired"),
        (
            ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"),
            "the coordinator refused this worker's certificate (issued by a CA",
        ),
        (
            ssl.SSLError(1, "[SSL: SSLV3_ALERT_CERTIFICATE_EXPIRED] sslv3 alert"),
            "refused this worker's certificate: it has expired",
        ),
        (
            ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert"),
            "requires a client certificate",
        ),
    ],
)
def test_each_tls_failure_is_named(exc: BaseException, phrase: str) -> None:
    described = describe_connection_failure(exc, URL, 10.0)
    assert described.startswith("TLS: ")
    assert phrase in described


def test_a_closed_tls_connection_says_the_certificate_was_likely_refused() -> None:
    exc = InvalidMessage("did not receive a valid HTTP response")
    exc.__cause__ = EOFError("connection closed while reading HTTP status line")
    described = describe_connection_failure(exc, URL, 10.0)
    assert "refused this worker's certificate" in described


def test_an_alert_wrapped_in_the_http_read_is_named() -> None:
    exc = InvalidMessage("did not receive a valid HTTP response")
    exc.__cause__ = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    assert "issued by a CA" in describe_connection_failure(exc, URL, 10.0)
