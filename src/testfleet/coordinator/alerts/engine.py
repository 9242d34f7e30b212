"""The alert engine: evaluates the rules on the coordinator's clock and moves each
alert instance through pending → firing → resolved.

Callers: the app's lifespan runs :meth:`AlertEngine.run` as a background task
(every ``evaluation_interval_seconds``); the alerts route reads
:meth:`AlertEngine.pending` and the store; ``/metrics`` reads
:meth:`AlertEngine.firing_count`. Tests call :meth:`AlertEngine.evaluate_once`
or the pure :meth:`AlertEngine.step` directly on a fake clock.

Off the loop's hot path: one evaluation reads copies of the live state through
:class:`~testfleet.coordinator.state_view.StateView` (a scan of the open tasks
and attempts, on the event loop, between turns), then the store's history
counts and the regression finder in a worker thread. It never changes
coordinator state: its own rows (``alerts``) go through the store, in a
transaction of their own.

An instance is kept in memory from pending on; it is stored when it fires and
when it resolves (a pending condition that clears leaves no row). At start-up
the alerts stored as firing are taken back, so a restart neither fires them
twice nor forgets to resolve them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from testfleet.clock import Clock
from testfleet.coordinator.alerts.config import AlertsConfig
from testfleet.coordinator.alerts.notify import Notifier
from testfleet.coordinator.alerts.rules import (
    AlertInputs,
    LostWorker,
    OpenAttempt,
    RegressionFinder,
    evaluate,
    no_regressions,
)
from testfleet.coordinator.state_view import StateView
from testfleet.domain.alerts import AlertRecord, AlertRule, AlertState, alert_id, fingerprint
from testfleet.domain.enums import WorkerStatus
from testfleet.store.contract import AlertStore
from testfleet.store.errors import StoreError

log = logging.getLogger(__name__)

#: At most this many firing alerts are taken back at start-up.
MAX_RESTORED = 10_000


class AlertEngine:
    """Rules → instances → stored rows and notifications (see the module docstring)."""

    def __init__(
        self,
        config: AlertsConfig,
        view: StateView,
        store: AlertStore,
        clock: Clock,
        *,
        notifier: Notifier | None = None,
        find_regressions: RegressionFinder = no_regressions,
    ) -> None:
        """``find_regressions``: the benchmark regression detector (see
        :class:`~testfleet.coordinator.alerts.rules.RegressionFinder`); the default finds none."""
        self.config = config
        self._view = view
        self._store = store
        self._clock = clock
        self.notifier = notifier
        self._find_regressions = find_regressions
        #: Pending and firing instances by (rule, fingerprint of the labels).
        self._active: dict[tuple[AlertRule, str], AlertRecord] = {}
        #: Evaluations that failed (the store could not be read or written).
        self.failed_evaluations = 0
        self.evaluations = 0

    def restore(self) -> None:
        """Take back the alerts stored as firing (called once, before :meth:`run`)."""
        for alert in self._store.list_alerts(state=AlertState.FIRING, limit=MAX_RESTORED):
            self._active[(alert.rule, alert.fingerprint)] = alert

    # ----------------------------------------------------------------- reading

    def firing(self) -> list[AlertRecord]:
        return [a for a in self._active.values() if a.state is AlertState.FIRING]

    def firing_count(self) -> int:
        """How many alerts fire now (the ``testfleet_alerts_firing`` gauge)."""
        return sum(1 for a in self._active.values() if a.state is AlertState.FIRING)

    def firing_by_rule(self) -> dict[str, int]:
        """Firing alerts per rule (``testfleet_alerts_firing{rule}`` at scrape time)."""
        counts: dict[str, int] = {}
        for alert in self._active.values():
            if alert.state is AlertState.FIRING:
                counts[alert.rule.value] = counts.get(alert.rule.value, 0) + 1
        return counts

    def pending(self) -> list[AlertRecord]:
        """Copies of the pending instances (not stored), oldest first."""
        found = [a for a in self._active.values() if a.state is AlertState.PENDING]
        return [replace(a, labels=dict(a.labels)) for a in sorted(found, key=_age)]

    # -------------------------------------------------------------- evaluating

    async def run(self) -> None:
        """Evaluate every ``evaluation_interval_seconds`` until cancelled. A failed
        evaluation is logged and counted; the next one tries again."""
        while True:
            await self._clock.sleep(self.config.evaluation_interval_seconds)
            try:
                await self.evaluate_once()
            except StoreError as exc:
                self.failed_evaluations += 1
                log.warning("alert evaluation failed, trying again next time: %s", exc)

    async def evaluate_once(self) -> list[AlertRecord]:
        """One evaluation: read, step, store the changes, notify; the changes."""
        now = self._clock.now()
        inputs = await asyncio.to_thread(self._history, self._live(now))
        changes = self.step(inputs)
        if changes:
            await asyncio.to_thread(self._store.save_alerts, changes)
        self.evaluations += 1
        if self.notifier is not None:
            for change in changes:
                self.notifier.announce(change)
            self.notifier.remind(self.firing())
            await self.notifier.flush()
        return changes

    def _live(self, now: float) -> AlertInputs:
        """The live part of the inputs, read on the event loop (copies)."""
        view = self._view
        return AlertInputs(
            now=now,
            lost_workers=[
                LostWorker(w.record.worker_id, w.record.last_heartbeat)
                for w in view.workers()
                if w.record.status is WorkerStatus.LOST
            ],
            unschedulable=view.unschedulable_counts(),
            oldest_ready_since=view.oldest_ready_queued_at(now),
            open_attempts=[
                OpenAttempt(a.attempt_id, a.task_id, a.worker_id, a.start_time, a.timeout_seconds)
                for a in view.open_attempts()
            ],
        )

    def _history(self, live: AlertInputs) -> AlertInputs:
        """``live`` with the store's history added (runs in a worker thread)."""
        rules = self.config.rules
        now = live.now
        return replace(
            live,
            last_assignment=self._store.last_assignment(),
            failure_window=self._store.count_attempts(now - rules.failure_rate_high.window_seconds),
            infrastructure_window=self._store.count_attempts(
                now - rules.infrastructure_errors.window_seconds
            ),
            tests=self._store.count_tests(now - rules.flaky_rate.window_seconds),
            regressions=(
                tuple(self._find_regressions(now)) if rules.benchmark_regression.enabled else ()
            ),
        )

    def step(self, inputs: AlertInputs) -> list[AlertRecord]:
        """Apply one evaluation's observations; copies of the instances that fired
        or resolved in it. Pure apart from the engine's own instances."""
        now = inputs.now
        seen: set[tuple[AlertRule, str]] = set()
        changes: list[AlertRecord] = []
        for rule in AlertRule:
            config = self.config.rules.of(rule)
            if not config.enabled:
                continue  # its instances resolve below
            for observation in evaluate(rule, config, inputs):
                labels = dict(observation.labels)
                key = (rule, fingerprint(rule, labels))
                seen.add(key)
                alert = self._active.get(key)
                if alert is None:
                    alert = AlertRecord(
                        alert_id=alert_id(rule, labels, now),
                        rule=rule,
                        labels=labels,
                        severity=config.severity,
                        state=AlertState.PENDING,
                        summary=observation.summary,
                        value=observation.value,
                        pending_since=now,
                    )
                    self._active[key] = alert
                alert.summary = observation.summary
                alert.value = observation.value
                alert.last_seen = now
                if alert.state is AlertState.PENDING and now - alert.pending_since >= (
                    config.for_seconds
                ):
                    alert.state = AlertState.FIRING
                    alert.fired_at = now
                    changes.append(_copy(alert))
        for key, alert in list(self._active.items()):
            if key in seen:
                continue
            del self._active[key]
            if alert.state is AlertState.FIRING:
                alert.state = AlertState.RESOLVED
                alert.resolved_at = now
                changes.append(_copy(alert))
        return changes


def _age(alert: AlertRecord) -> tuple[float, str]:
    return (alert.pending_since, alert.alert_id)


def _copy(alert: AlertRecord) -> AlertRecord:
    return replace(alert, labels=dict(alert.labels), annotations=dict(alert.annotations))


def firing_first(alerts: Sequence[AlertRecord]) -> list[AlertRecord]:
    """Firing before resolved, newest first within each (the API's order)."""
    return sorted(
        alerts, key=lambda a: (a.state is not AlertState.FIRING, -(a.fired_at or a.pending_since))
    )
