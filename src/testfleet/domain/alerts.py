"""Alerts as values: the rules, an alert instance's states, and notification results.

Callers: the coordinator's alert engine (``coordinator/alerts/``) makes and
moves these, the store keeps them (``alerts`` and ``alert_notifications``,
schema version 7), and the alerts route and ``testfleet alerts`` show them.
No I/O here.

An *instance* is one rule firing for one label set (a rule and, say, a worker
id): it is ``pending`` while its condition holds for less than the rule's
``for`` duration (kept in memory only, not stored), ``firing`` once it has held
that long, and ``resolved`` when the condition no longer holds. A later
occurrence of the same condition is a new instance with a new id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class AlertRule(StrEnum):
    """What an alert watches; each has its own thresholds (``coordinator/alerts/config.py``)."""

    WORKER_LOST = "worker_lost"
    NO_WORKER_FOR_QUEUED_WORK = "no_worker_for_queued_work"
    QUEUE_STUCK = "queue_stuck"
    ATTEMPT_OVERDUE = "attempt_overdue"
    FAILURE_RATE_HIGH = "failure_rate_high"
    INFRASTRUCTURE_ERRORS = "infrastructure_errors"
    BENCHMARK_REGRESSION = "benchmark_regression"
    FLAKY_RATE = "flaky_rate"


class AlertState(StrEnum):
    """Where an alert instance is (see the module docstring)."""

    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(StrEnum):
    """How urgent a rule's alerts are (a label receivers route on)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class ReceiverKind(StrEnum):
    """The payload a webhook receiver gets."""

    #: Alertmanager's webhook receiver JSON (version "4").
    ALERTMANAGER = "alertmanager"
    #: A Slack incoming webhook: ``{"text": ...}``.
    SLACK = "slack"


class NotificationStatus(StrEnum):
    """What became of one notification to one receiver."""

    SENT = "sent"
    #: Every try failed (the error is the last one).
    FAILED = "failed"
    #: The receiver's queue was full: never tried, so the coordinator never waits.
    DROPPED = "dropped"


def fingerprint(rule: AlertRule, labels: Mapping[str, str]) -> str:
    """A stable id of a rule and label set: 16 hex digits of SHA-256 over both."""
    text = rule.value + "\0" + "\0".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(slots=True)
class AlertRecord:
    """One alert instance (a row of ``alerts`` once it fires)."""

    #: ``<fingerprint>-<pending since, epoch microseconds>``: unique per instance.
    alert_id: str
    rule: AlertRule
    labels: dict[str, str]
    severity: Severity
    state: AlertState
    #: One line for people: what holds and the figure behind it.
    summary: str
    #: The figure the rule compared with its threshold (a count, a rate, seconds).
    value: float
    #: When the condition was first seen (the instance went pending).
    pending_since: float
    fired_at: float | None = None
    resolved_at: float | None = None
    #: When the rule last saw the condition hold.
    last_seen: float = 0.0
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.labels)


def alert_id(rule: AlertRule, labels: Mapping[str, str], pending_since: float) -> str:
    """The id of the instance of ``rule`` for ``labels`` that went pending at ``pending_since``."""
    return f"{fingerprint(rule, labels)}-{round(pending_since * 1_000_000)}"


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """One notification of one alert's state to one receiver (a row of ``alert_notifications``)."""

    alert_id: str
    receiver: str
    #: The state it announced: firing (first or a repeat) or resolved.
    alert_state: AlertState
    status: NotificationStatus
    attempts: int
    time: float
    error: str | None = None
    #: A repeat of a firing alert (after the receiver's repeat interval).
    repeat: bool = False
