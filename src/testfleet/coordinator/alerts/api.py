"""``GET /api/v1/alerts``: alerts firing now, pending ones, and the history.

Callers: ``testfleet alerts`` (through :meth:`~testfleet.client.FleetClient.alerts`),
the dashboard's alerts page, anyone with a viewer token. Firing and resolved
alerts come from the store (``alerts``), pending ones from the engine's memory
(they are not stored until they fire), and the latest notification results
from ``alert_notifications``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from testfleet.coordinator.alerts.engine import AlertEngine, firing_first
from testfleet.coordinator.api_errors import (
    FORBIDDEN,
    INVALID_PARAMETER,
    STORAGE_ERROR,
    UNAUTHENTICATED,
    refusals,
)
from testfleet.coordinator.api_models import ResponseModel
from testfleet.coordinator.api_views import iso
from testfleet.coordinator.auth import require
from testfleet.domain.alerts import (
    AlertRecord,
    AlertRule,
    AlertState,
    NotificationRecord,
    NotificationStatus,
    Severity,
)
from testfleet.security.tokens import Role
from testfleet.store.contract import AlertStore

#: The most alerts (and notifications) one answer lists.
MAX_LIMIT = 1000


class AlertView(ResponseModel):
    """One alert instance."""

    alert_id: str
    rule: AlertRule
    labels: dict[str, str]
    severity: Severity
    state: AlertState
    summary: str
    value: float
    pending_since: str
    fired_at: str | None
    resolved_at: str | None
    last_seen: str | None


class NotificationView(ResponseModel):
    """One notification of an alert's state to one webhook receiver."""

    alert_id: str
    receiver: str
    alert_state: AlertState
    status: NotificationStatus
    attempts: int
    time: str
    error: str | None
    repeat: bool


class AlertsView(ResponseModel):
    """Alerts: firing first, then pending, then resolved (newest first), and the
    latest notifications."""

    firing: int
    pending: int
    alerts: list[AlertView]
    notifications: list[NotificationView]


def alert_view(alert: AlertRecord) -> AlertView:
    return AlertView(
        alert_id=alert.alert_id,
        rule=alert.rule,
        labels=alert.labels,
        severity=alert.severity,
        state=alert.state,
        summary=alert.summary,
        value=alert.value,
        pending_since=iso(alert.pending_since) or "",
        fired_at=iso(alert.fired_at),
        resolved_at=iso(alert.resolved_at),
        last_seen=iso(alert.last_seen) if alert.last_seen else None,
    )


def notification_view(record: NotificationRecord) -> NotificationView:
    return NotificationView(
        alert_id=record.alert_id,
        receiver=record.receiver,
        alert_state=record.alert_state,
        status=record.status,
        attempts=record.attempts,
        time=iso(record.time) or "",
        error=record.error,
        repeat=record.repeat,
    )


def build_alerts_router(engine: AlertEngine, store: AlertStore) -> APIRouter:
    """The alerts route over ``engine`` and ``store`` (built by the app factory)."""
    router = APIRouter(
        prefix="/api/v1",
        dependencies=[Depends(require(Role.VIEWER))],
        responses=refusals(UNAUTHENTICATED, FORBIDDEN),
    )

    @router.get(
        "/alerts",
        response_model=AlertsView,
        responses=refusals(INVALID_PARAMETER, STORAGE_ERROR),
        summary="Alerts firing, pending and resolved, with notification results",
    )
    async def alerts(
        state: Annotated[AlertState | None, Query(description="Only alerts in this state.")] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIMIT, description="At most this many alerts.")
        ] = 100,
    ) -> AlertsView:
        def read() -> tuple[list[AlertRecord], list[NotificationRecord]]:
            stored = (
                [] if state is AlertState.PENDING else store.list_alerts(state=state, limit=limit)
            )
            return stored, store.alert_notifications(limit=limit)

        stored, notifications = await asyncio.to_thread(read)
        pending = engine.pending()
        shown = firing_first(stored)
        if state in (None, AlertState.PENDING):
            firing = [a for a in shown if a.state is AlertState.FIRING]
            rest = [a for a in shown if a.state is not AlertState.FIRING]
            shown = (firing + pending + rest)[:limit]
        return AlertsView(
            firing=engine.firing_count(),
            pending=len(pending),
            alerts=[alert_view(alert) for alert in shown],
            notifications=[notification_view(record) for record in notifications],
        )

    return router
