"""SQL for ``alerts`` and ``alert_notifications`` (schema version 7), and the
history reads the alert rules need.

Callers: :class:`~testfleet.store.store.Store` through :class:`AlertTables`, a
mixin that keeps these methods out of ``store.py``; the coordinator's alert
engine and notifier write (small transactions of their own under the store's
one write lock, like the token writes) and the alerts route reads. Times cross
as integer epoch microseconds, as in ``rows.py``; labels and annotations are
JSON objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import orjson

from testfleet.domain.alerts import (
    AlertRecord,
    AlertRule,
    AlertState,
    NotificationRecord,
    NotificationStatus,
    Severity,
)
from testfleet.domain.enums import AttemptStatus, ErrorClass
from testfleet.domain.pytest_tasks import TestOutcome
from testfleet.store.rows import from_micros, to_micros
from testfleet.store.security_tables import StoreTransactions

T = TypeVar("T")

_ALERT_COLUMNS = (
    "alert_id, rule, labels, severity, state, summary, value, epoch_us(pending_since), "
    "epoch_us(fired_at), epoch_us(resolved_at), epoch_us(last_seen), annotations"
)
_NOTIFICATION_COLUMNS = (
    "alert_id, receiver, alert_state, status, attempts, epoch_us(time), error, repeat"
)

#: Attempts that ended (cancelled ones are nobody's failure and are left out).
_FINISHED = (
    AttemptStatus.COMPLETED,
    AttemptStatus.FAILED,
    AttemptStatus.TIMED_OUT,
    AttemptStatus.LOST,
)
_FAILED = (AttemptStatus.FAILED, AttemptStatus.TIMED_OUT)
_INFRASTRUCTURE = (ErrorClass.INFRASTRUCTURE, ErrorClass.WORKER_LOST, ErrorClass.LOST_TOO_OFTEN)


@dataclass(frozen=True, slots=True)
class AttemptCounts:
    """Attempts that ended in a window (the failure-rate and infrastructure rules)."""

    #: Completed, failed, timed out or lost.
    finished: int
    #: Failed or timed out.
    failed: int
    #: Lost, or classified ``infrastructure`` or ``worker_lost``.
    infrastructure: int


@dataclass(frozen=True, slots=True)
class TestCounts:
    """Test verdicts recorded in a window (the flaky-rate rule)."""

    __test__ = False

    #: Tests that passed or failed (skips and xfails say nothing about flakiness).
    decided: int
    #: Tests that passed only on a rerun.
    flaky: int


def upsert_alerts(cursor: duckdb.DuckDBPyConnection, alerts: Sequence[AlertRecord]) -> None:
    for alert in alerts:
        cursor.execute(
            "INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, make_timestamp(?), "
            "make_timestamp(?), make_timestamp(?), make_timestamp(?), ?) "
            "ON CONFLICT (alert_id) DO UPDATE SET state = excluded.state, "
            "summary = excluded.summary, value = excluded.value, fired_at = excluded.fired_at, "
            "resolved_at = excluded.resolved_at, last_seen = excluded.last_seen, "
            "annotations = excluded.annotations",
            [
                alert.alert_id,
                alert.rule.value,
                alert.fingerprint,
                orjson.dumps(alert.labels).decode(),
                alert.severity.value,
                alert.state.value,
                alert.summary,
                alert.value,
                to_micros(alert.pending_since),
                to_micros(alert.fired_at),
                to_micros(alert.resolved_at),
                to_micros(alert.last_seen),
                orjson.dumps(alert.annotations).decode(),
            ],
        )


def insert_notifications(
    cursor: duckdb.DuckDBPyConnection, notifications: Sequence[NotificationRecord]
) -> None:
    for record in notifications:
        cursor.execute(
            "INSERT INTO alert_notifications (alert_id, receiver, alert_state, status, attempts, "
            "time, error, repeat) VALUES (?, ?, ?, ?, ?, make_timestamp(?), ?, ?)",
            [
                record.alert_id,
                record.receiver,
                record.alert_state.value,
                record.status.value,
                record.attempts,
                to_micros(record.time),
                record.error,
                record.repeat,
            ],
        )


def _alert(row: tuple[Any, ...]) -> AlertRecord:
    (alert_id, rule, labels, severity, state, summary, value, pending, fired, resolved, seen) = row[
        :11
    ]
    return AlertRecord(
        alert_id=alert_id,
        rule=AlertRule(rule),
        labels=orjson.loads(labels),
        severity=Severity(severity),
        state=AlertState(state),
        summary=summary,
        value=value,
        pending_since=from_micros(pending) or 0.0,
        fired_at=from_micros(fired),
        resolved_at=from_micros(resolved),
        last_seen=from_micros(seen) or 0.0,
        annotations=orjson.loads(row[11]),
    )


def list_alerts(
    cursor: duckdb.DuckDBPyConnection, *, state: AlertState | None = None, limit: int = 100
) -> list[AlertRecord]:
    """Stored alerts, newest first (by when they fired), ``limit`` at most."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    clause = "WHERE state = ?" if state is not None else ""
    params: list[object] = [state.value] if state is not None else []
    rows = cursor.execute(
        f"SELECT {_ALERT_COLUMNS} FROM alerts {clause} "
        "ORDER BY fired_at DESC NULLS LAST, alert_id LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [_alert(row) for row in rows]


def list_notifications(
    cursor: duckdb.DuckDBPyConnection, *, alert_id: str | None = None, limit: int = 100
) -> list[NotificationRecord]:
    """Notification results, newest first, ``limit`` at most (of one alert if given)."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    clause = "WHERE alert_id = ?" if alert_id is not None else ""
    params: list[object] = [alert_id] if alert_id is not None else []
    rows = cursor.execute(
        f"SELECT {_NOTIFICATION_COLUMNS} FROM alert_notifications {clause} "
        "ORDER BY seq DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [
        NotificationRecord(
            alert_id=alert_id_,
            receiver=receiver,
            alert_state=AlertState(alert_state),
            status=NotificationStatus(status),
            attempts=attempts,
            time=from_micros(time) or 0.0,
            error=error,
            repeat=repeat,
        )
        for alert_id_, receiver, alert_state, status, attempts, time, error, repeat in rows
    ]


def count_attempts(cursor: duckdb.DuckDBPyConnection, since: float) -> AttemptCounts:
    """Attempts that ended at or after ``since`` (see :class:`AttemptCounts`)."""
    finished = [s.value for s in _FINISHED]
    failed = [s.value for s in _FAILED]
    infrastructure = [c.value for c in _INFRASTRUCTURE]
    row = cursor.execute(
        "SELECT count(*) FILTER (WHERE status IN (SELECT unnest(?))), "
        "count(*) FILTER (WHERE status IN (SELECT unnest(?))), "
        "count(*) FILTER (WHERE status = ? OR error_class IN (SELECT unnest(?))) "
        "FROM task_execution_history WHERE end_time >= make_timestamp(?)",
        [finished, failed, AttemptStatus.LOST.value, infrastructure, to_micros(since)],
    ).fetchone()
    assert row is not None  # aggregates always give one row
    return AttemptCounts(finished=row[0], failed=row[1], infrastructure=row[2])


def count_tests(cursor: duckdb.DuckDBPyConnection, since: float) -> TestCounts:
    """Tests recorded at or after ``since`` (see :class:`TestCounts`)."""
    row = cursor.execute(
        "SELECT count(*) FILTER (WHERE outcome IN (?, ?)), "
        "count(*) FILTER (WHERE outcome = ? AND rerun > 0) "
        "FROM test_results WHERE recorded_time >= make_timestamp(?)",
        [
            TestOutcome.PASSED.value,
            TestOutcome.FAILED.value,
            TestOutcome.PASSED.value,
            to_micros(since),
        ],
    ).fetchone()
    assert row is not None
    return TestCounts(decided=row[0], flaky=row[1])


def last_assignment(cursor: duckdb.DuckDBPyConnection) -> float | None:
    """When the last attempt started (was assigned), or None before the first."""
    row = cursor.execute("SELECT epoch_us(max(start_time)) FROM task_execution_history").fetchone()
    return None if row is None else from_micros(row[0])


class AlertTables:
    """The alert methods of :class:`~testfleet.store.store.Store` (the contract's
    ``AlertStore``): writes in a transaction of their own, reads on a fresh cursor."""

    def save_alerts(self: StoreTransactions, alerts: Sequence[AlertRecord]) -> None:
        """Insert or update these alert instances, all in one transaction."""
        self._security_write("save alerts", lambda cursor: upsert_alerts(cursor, alerts))

    def record_notifications(
        self: StoreTransactions, notifications: Sequence[NotificationRecord]
    ) -> None:
        """Append these notification results."""
        self._security_write(
            "record alert notifications", lambda cursor: insert_notifications(cursor, notifications)
        )

    def list_alerts(
        self: StoreTransactions, *, state: AlertState | None = None, limit: int = 100
    ) -> list[AlertRecord]:
        return self._read(
            "list alerts", lambda cursor: list_alerts(cursor, state=state, limit=limit)
        )

    def alert_notifications(
        self: StoreTransactions, *, alert_id: str | None = None, limit: int = 100
    ) -> list[NotificationRecord]:
        return self._read(
            "list alert notifications",
            lambda cursor: list_notifications(cursor, alert_id=alert_id, limit=limit),
        )

    def count_attempts(self: StoreTransactions, since: float) -> AttemptCounts:
        return self._read("count recent attempts", lambda cursor: count_attempts(cursor, since))

    def count_tests(self: StoreTransactions, since: float) -> TestCounts:
        return self._read("count recent tests", lambda cursor: count_tests(cursor, since))

    def last_assignment(self: StoreTransactions) -> float | None:
        return self._read("read the last assignment", last_assignment)
