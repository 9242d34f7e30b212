"""``GET /api/v1/alerts`` on a real app: a stored firing alert is taken back at
start-up and listed with its notifications; bad parameters are a 422 naming them."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from testfleet.coordinator.app import create_app
from testfleet.domain.alerts import (
    AlertRecord,
    AlertRule,
    AlertState,
    NotificationRecord,
    NotificationStatus,
    Severity,
)
from testfleet.security.tokens import Role
from testfleet.store import Store
from testfleet.testing.tokens import bearer

T0 = 1_800_000_000.0


def test_alerts_lists_the_stored_alerts_and_notifications(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    alert = AlertRecord(
        alert_id="f-1",
        rule=AlertRule.QUEUE_STUCK,
        labels={},
        severity=Severity.WARNING,
        state=AlertState.FIRING,
        summary="stuck",
        value=700.0,
        pending_since=T0,
        fired_at=T0,
        last_seen=T0,
    )
    with Store(db) as store:
        store.save_alerts([alert])
        store.record_notifications(
            [NotificationRecord("f-1", "ops", AlertState.FIRING, NotificationStatus.SENT, 1, T0)]
        )
    headers = bearer(db, Role.VIEWER)
    app = create_app(db)
    with TestClient(app) as client:
        answer = client.get("/api/v1/alerts", headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["firing"] == 1
        assert [(a["alert_id"], a["state"], a["rule"]) for a in body["alerts"]] == [
            ("f-1", "firing", "queue_stuck")
        ]
        assert [(n["receiver"], n["status"]) for n in body["notifications"]] == [("ops", "sent")]
        refused = client.get("/api/v1/alerts?state=burning", headers=headers)
        assert refused.status_code == 422
        assert "state" in refused.text
