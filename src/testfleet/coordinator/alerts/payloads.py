"""The bodies webhook receivers get: Alertmanager's webhook JSON and Slack's ``{"text"}``.

Callers: :class:`~testfleet.coordinator.alerts.notify.Notifier`, once per
notification. Pure functions of an alert's copy, so tests compare whole
payloads. One alert per message: a state change is announced as it happens,
never held back to be grouped.

The Alertmanager shape is its webhook receiver format (version "4"): a
receiver written for Alertmanager (a chat bridge, an incident tool) takes
these as they are. A firing alert's ``endsAt`` is Alertmanager's zero time.

Links: ``external_url`` is the coordinator's public URL (``--public-url``, or
derived from the bind address; ``coordinator/public_url.py``). Alertmanager's
``externalURL`` is that URL and each alert's ``generatorURL`` the dashboard's
alerts page under it; a Slack message ends with a link to the same page.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from testfleet.domain.alerts import AlertRecord, AlertState

#: The dashboard's alerts page, under the public URL (dashboard/pages.py serves it).
ALERTS_PAGE_PATH = "/dashboard/alerts"

#: Alertmanager's "no end yet" for a firing alert.
ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(seconds: float) -> str:
    """Epoch seconds as RFC 3339 in UTC, with milliseconds (as Alertmanager writes them)."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def alert_labels(alert: AlertRecord) -> dict[str, str]:
    """The labels receivers route on: the rule as ``alertname``, the severity, then its own."""
    return {"alertname": alert.rule.value, "severity": alert.severity.value, **alert.labels}


def alerts_page_url(external_url: str) -> str:
    """The alerts page under ``external_url`` ("" when there is no URL to link to)."""
    return f"{external_url.rstrip('/')}{ALERTS_PAGE_PATH}" if external_url else ""


def alertmanager_payload(
    alert: AlertRecord, receiver: str, external_url: str = ""
) -> dict[str, Any]:
    """Alertmanager's webhook body for ``alert`` sent to ``receiver``."""
    status = "resolved" if alert.state is AlertState.RESOLVED else "firing"
    labels = alert_labels(alert)
    annotations = {"summary": alert.summary, **alert.annotations}
    started = alert.fired_at if alert.fired_at is not None else alert.pending_since
    ends = rfc3339(alert.resolved_at) if alert.resolved_at is not None else ZERO_TIME
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alert.rule.value}",fingerprint="{alert.fingerprint}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {"alertname": alert.rule.value},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(started),
                "endsAt": ends,
                "generatorURL": alerts_page_url(external_url),
                "fingerprint": alert.fingerprint,
            }
        ],
    }


def slack_payload(
    alert: AlertRecord, *, repeat: bool = False, external_url: str = ""
) -> dict[str, Any]:
    """A Slack incoming-webhook body: one line saying what changed, then a link
    to the dashboard's alerts page when the coordinator's URL is known."""
    labels = " ".join(f"{key}={value}" for key, value in sorted(alert.labels.items()))
    head = f"{alert.rule.value} ({alert.severity.value})" + (f" {labels}" if labels else "")
    page = alerts_page_url(external_url)
    # Slack's link syntax: <url|text>. The text before it is the alert's own.
    link = f" <{page}|alerts page>" if page else ""
    if alert.state is AlertState.RESOLVED:
        return {"text": f"[RESOLVED] {head}: {_slack_escape(alert.summary)}{link}"}
    still = " (still firing)" if repeat else ""
    return {"text": f"[FIRING] {head}: {_slack_escape(alert.summary)}{still}{link}"}


def _slack_escape(text: str) -> str:
    """Slack reads ``<``, ``>`` and ``&`` as markup; these are its own escapes."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
