"""The coordinator's public URL: ``--public-url`` is checked at the edge (one line
naming the flag), derived from the bind address when not given, and what alert
notifications link to (Alertmanager's externalURL/generatorURL, Slack's link)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.coordinator.alerts.payloads import (
    ALERTS_PAGE_PATH,
    alertmanager_payload,
    slack_payload,
)
from testfleet.coordinator.dashboard.login import DASHBOARD_PATH
from testfleet.coordinator.public_url import PublicUrlError, check_public_url, derive_public_url
from testfleet.domain.alerts import AlertRecord, AlertRule, AlertState, Severity, alert_id

T0 = 1_800_000_000.0


def _alert(summary: str = "worker w1 is lost") -> AlertRecord:
    labels = {"worker_id": "w1"}
    return AlertRecord(
        alert_id=alert_id(AlertRule.WORKER_LOST, labels, T0),
        rule=AlertRule.WORKER_LOST,
        labels=labels,
        severity=Severity.CRITICAL,
        state=AlertState.FIRING,
        summary=summary,
        value=20.0,
        pending_since=T0,
        fired_at=T0,
        last_seen=T0,
    )


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://fleet.example.com:8443", "https://fleet.example.com:8443"),
        ("http://10.0.0.5:8700/", "http://10.0.0.5:8700"),
        ("  https://fleet/testfleet/ ", "https://fleet/testfleet"),
        ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
    ],
)
def test_good_public_urls_are_kept_without_a_trailing_slash(given: str, kept: str) -> None:
    assert check_public_url(given) == kept


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("fleet.example.com:8443", "not an http(s) URL"),
        ("ftp://fleet", "not an http(s) URL"),
        ("https://", "not an http(s) URL"),
        ("https://fleet:99999", "not a URL"),
        ("https://fleet:port", "not a URL"),
        ("https://user:pw@fleet", "credentials"),
        ("https://fleet/?a=1", "query or fragment"),
        ("", "not an http(s) URL"),
    ],
)
def test_bad_public_urls_are_refused_naming_the_flag_and_the_fix(given: str, said: str) -> None:
    with pytest.raises(PublicUrlError) as refused:
        check_public_url(given)
    message = str(refused.value)
    assert message.startswith("--public-url: ")
    assert said in message


def test_the_default_is_derived_from_the_bind_address_and_scheme() -> None:
    assert derive_public_url("127.0.0.1", 8700, tls=False) == "http://127.0.0.1:8700"
    assert derive_public_url("fleet.lan", 8443, tls=True) == "https://fleet.lan:8443"
    assert derive_public_url("::1", 8443, tls=True) == "https://[::1]:8443"
    # A wildcard bind names no reachable address: the host name stands in.
    assert derive_public_url("0.0.0.0", 8700, tls=True) == f"https://{socket.getfqdn()}:8700"


def test_the_coordinator_command_refuses_a_bad_public_url_before_starting(
    tmp_path: Path,
) -> None:
    db = tmp_path / "c.duckdb"
    done = CliRunner().invoke(
        app, ["coordinator", "--db", str(db), "--port", "1", "--public-url", "fleet:8443"]
    )
    assert done.exit_code == 2
    assert "Traceback" not in done.output
    assert "--public-url: 'fleet:8443' is not an http(s) URL" in done.output
    assert not db.exists()


def test_notifications_link_to_the_dashboards_alerts_page() -> None:
    assert f"{DASHBOARD_PATH}/alerts" == ALERTS_PAGE_PATH
    body = alertmanager_payload(_alert(), "ops", "https://fleet:8443")
    assert body["externalURL"] == "https://fleet:8443"
    assert body["alerts"][0]["generatorURL"] == "https://fleet:8443/dashboard/alerts"
    text = slack_payload(_alert(), external_url="https://fleet:8443")["text"]
    assert text.endswith(" <https://fleet:8443/dashboard/alerts|alerts page>")


def test_without_a_url_nothing_links_and_slack_markup_in_a_summary_is_escaped() -> None:
    body = alertmanager_payload(_alert(), "ops")
    assert body["externalURL"] == ""
    assert body["alerts"][0]["generatorURL"] == ""
    text = slack_payload(_alert("a <b> & c"))["text"]
    assert text == "[FIRING] worker_lost (critical) worker_id=w1: a &lt;b&gt; &amp; c"
