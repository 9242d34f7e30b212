"""The writes outside the loop's batches (tokens, the audit trail, worker
revocations, alerts and their notifications) on both stores: the same shared
SQL runs on DuckDB and, through the PostgreSQL store's own small-write path,
on PostgreSQL, and reads back the same."""

from __future__ import annotations

from dataclasses import replace

from store_builders import T0, task, worker

from testfleet.domain.alerts import (
    AlertRecord,
    AlertRule,
    AlertState,
    NotificationRecord,
    NotificationStatus,
    Severity,
)
from testfleet.domain.records import WriteBatch
from testfleet.security.audit import AuditEvent, AuditKind, AuditOutcome
from testfleet.security.enrolment import TokenConsumption
from testfleet.security.tokens import Role, issue_token
from testfleet.security.worker_revocation import WorkerRevocation
from testfleet.store import Store


def audit(time: float, actor: str) -> AuditEvent:
    return AuditEvent(
        time=time,
        kind=AuditKind.TOKEN_CREATED,
        outcome=AuditOutcome.ALLOWED,
        actor=actor,
        detail={"why": "a test", "n": 1},
    )


def test_tokens_are_stored_used_once_and_revoked(any_store: Store) -> None:
    admin = issue_token("root", Role.ADMIN, T0).record
    enrol = issue_token("gpu-7", Role.ENROL, T0, expires_in_seconds=3600).record
    any_store.add_token(admin, [audit(T0, "root")])
    any_store.add_token(enrol)

    assert any_store.get_token(admin.token_id) == admin
    assert {t.token_id for t in any_store.list_tokens()} == {admin.token_id, enrol.token_id}
    assert any_store.consume_token(enrol.token_id, Role.ENROL, T0 + 1) is (
        TokenConsumption.CONSUMED
    )
    assert any_store.consume_token(enrol.token_id, Role.ENROL, T0 + 2) is (
        TokenConsumption.ALREADY_USED
    )
    assert any_store.revoke_token(admin.token_id, T0 + 5.000001) is True
    assert any_store.revoke_token("tok-none", T0 + 5) is False
    revoked = any_store.get_token(admin.token_id)
    assert revoked is not None
    assert revoked.revoked == T0 + 5.000001


def test_the_audit_trail_and_worker_revocations_read_back(any_store: Store) -> None:
    any_store.record_audit([audit(T0, "a"), audit(T0 + 1, "b"), audit(T0 + 2, "a")])
    events = any_store.audit_events(since=T0 + 0.5, actor="a")
    assert [(e.time, e.actor, e.detail) for e in events] == [
        (T0 + 2, "a", {"why": "a test", "n": 1})
    ]

    any_store.write(WriteBatch(workers=[worker("w1")], tasks=[task("t1")]))
    any_store.revoke_worker(WorkerRevocation("w1", T0, "root", "lost laptop"))
    any_store.revoke_worker(WorkerRevocation("w1", T0 + 10))
    assert any_store.worker_revocations() == {"w1": T0 + 10}


def test_alerts_are_upserted_and_notifications_appended(any_store: Store) -> None:
    fired = AlertRecord(
        alert_id="a1",
        rule=AlertRule.QUEUE_STUCK,
        labels={"priority": "5"},
        severity=Severity.WARNING,
        state=AlertState.FIRING,
        summary="queue stuck",
        value=700.0,
        pending_since=T0,
        fired_at=T0,
        resolved_at=None,
        last_seen=T0,
    )
    any_store.save_alerts([fired])
    resolved = replace(fired, state=AlertState.RESOLVED, resolved_at=T0 + 60, last_seen=T0 + 60)
    any_store.save_alerts([resolved])
    any_store.record_notifications(
        [
            NotificationRecord(
                "a1", "hook", AlertState.FIRING, NotificationStatus.FAILED, 3, T0, error="refused"
            )
        ]
    )
    assert any_store.list_alerts() == [resolved]
    (sent,) = any_store.alert_notifications(alert_id="a1")
    assert (sent.receiver, sent.status, sent.error) == (
        "hook",
        NotificationStatus.FAILED,
        "refused",
    )
