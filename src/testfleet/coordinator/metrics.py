"""The coordinator's Prometheus metrics: counters kept where things happen, gauges read at scrape.

Callers: the app factory builds one :class:`Metrics` per app and hands it to
the loop (``CoordinatorLoop.observer``: :meth:`Metrics.observe_batch` for each
turn's writes, :meth:`Metrics.observe_commit` for each DuckDB commit), to the
lifespan (:meth:`Metrics.probe_lag`) and to ``GET /metrics``
(:mod:`testfleet.coordinator.metrics_api`), which renders it with
:func:`prometheus_client.generate_latest`. The alert rules and notifications
(another module) report through :meth:`Metrics.count_notification` and
:meth:`Metrics.set_firing_alerts`.

Why plain dicts and our own histogram rather than prometheus-client's
``Counter``/``Histogram`` objects: the loop observes every attempt on its one
thread, and a label lookup plus a lock per observation costs more than a dict
increment; here the hot path pays an increment (and a bisect), and the
prometheus-client families are built only when someone scrapes. Each app has
its own :class:`~prometheus_client.CollectorRegistry` (tests build many apps).

Naming: ``testfleet_`` prefix, base units (seconds), ``_total`` counters,
labels from bounded sets only (enums, priorities 0-1000, worker ids: bounded by
the fleet) and never a task or test id.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from testfleet.clock import Clock
from testfleet.coordinator.health import (
    COMMITS_KEPT,
    LAGS_KEPT,
    CoordinatorHealth,
    coordinator_health,
)
from testfleet.domain.enums import AttemptStatus, TaskType
from testfleet.domain.records import WriteBatch

if TYPE_CHECKING:
    from testfleet.coordinator.state_view import StateView

log = logging.getLogger(__name__)

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

#: Seconds from entering the queue to being assigned: milliseconds to hours.
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400)
#: Seconds from assignment to the attempt's end: a unit test to a day-long benchmark.
ATTEMPT_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400)
#: Seconds of one group commit.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
#: Seconds a heartbeat waits between its socket and the loop's turn that applies it.
HEARTBEAT_LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10,
)  # fmt: skip
#: How often the event-loop lag probe wakes (seconds on the injected clock).
LAG_PROBE_SECONDS = 1.0

_TERMINAL = frozenset(AttemptStatus) - {AttemptStatus.ASSIGNED, AttemptStatus.RUNNING}
_NONE = "none"


@dataclass(slots=True)
class Histogram:
    """Cumulative-bucket histogram as Prometheus wants it; observing is a bisect."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        running = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_float_text(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _float_text(value: float) -> str:
    return repr(float(value))


class Metrics:
    """Every figure ``/metrics`` serves (see the module docstring)."""

    def __init__(self, clock: Clock, view: StateView, worker_channels: Callable[[], int]) -> None:
        self._clock = clock
        self._view = view
        self._worker_channels = worker_channels
        self.started = clock.now()
        #: (outcome, error class) -> attempts ended so.
        self.attempts: dict[tuple[AttemptStatus, str], int] = {}
        self.test_outcomes: dict[str, int] = {}
        self.benchmark_rows = 0
        self.queue_wait = {t: Histogram(QUEUE_WAIT_BUCKETS) for t in TaskType}
        self.attempt_duration = {t: Histogram(ATTEMPT_BUCKETS) for t in TaskType}
        self.commit_seconds = Histogram(COMMIT_BUCKETS)
        self.heartbeat_lag = Histogram(HEARTBEAT_LAG_BUCKETS)
        self.loop_lag_seconds = 0.0
        #: The newest commit times and lag readings, for the dashboard's health figures.
        self.recent_commits: deque[float] = deque(maxlen=COMMITS_KEPT)
        self.recent_lags: deque[float] = deque(maxlen=LAGS_KEPT)
        self.http_in_flight = 0
        #: (kind, figure) -> open regressions, refreshed by the route (it reads the store).
        self.open_regressions: dict[tuple[str, str], int] = {}
        #: (receiver, result) -> notifications sent; filled by the notifier.
        self.notifications: dict[tuple[str, str], int] = {}
        #: Tests flaky in the last day, as last counted from the store
        #: (``flaky_tests_metric.FlakyTestsGauge``); None until first counted.
        self.flaky_tests: int | None = None
        self._firing_alerts: Callable[[], Mapping[str, int]] | None = None
        #: The epoch this coordinator leads in (failover on PostgreSQL,
        #: ``coordinator/leadership.py``); 0 for a DuckDB coordinator, which
        #: always leads itself. A standby serves no metrics (it answers 503).
        self.leader_epoch = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # -- the hot path: called by the loop on its thread ------------------------

    def observe_batch(self, batch: WriteBatch) -> None:
        """Count what one turn wrote (called by the loop as it hands the turn over).

        New attempts give the queue wait of their task, ended ones their
        outcome and duration; each attempt ends once (the state machine closes
        it once), so nothing is counted twice."""
        if batch.attempts:
            new = batch.new_rows.attempt_ids if batch.new_rows is not None else set()
            tasks = {task.task_id: task for task in batch.tasks}
            for attempt in batch.attempts:
                task = tasks.get(attempt.task_id)
                if attempt.attempt_id in new and task is not None:
                    wait = attempt.start_time - task.queued_at
                    self.queue_wait[task.spec.type].observe(max(wait, 0.0))
                if attempt.status in _TERMINAL and attempt.end_time is not None:
                    key = (attempt.status, attempt.error_class or _NONE)
                    self.attempts[key] = self.attempts.get(key, 0) + 1
                    if task is not None:
                        duration = max(attempt.end_time - attempt.start_time, 0.0)
                        self.attempt_duration[task.spec.type].observe(duration)
        for row in batch.test_rows:
            self.test_outcomes[row.outcome] = self.test_outcomes.get(row.outcome, 0) + 1
        self.benchmark_rows += len(batch.benchmark_rows)

    def observe_commit(self, seconds: float) -> None:
        """One DuckDB group commit took ``seconds`` (called by the loop)."""
        self.commit_seconds.observe(seconds)
        self.recent_commits.append(seconds)

    def observe_heartbeat_lag(self, seconds: float) -> None:
        """A heartbeat waited ``seconds`` from its socket to its turn (called by the loop)."""
        self.heartbeat_lag.observe(seconds)

    # -- hooks for the alerts and notifications --------------------------------

    def count_notification(self, receiver: str, result: str) -> None:
        """A notification to a ``receiver`` kind (webhook, slack) ended with ``result``
        (sent, failed, ...): both from small fixed sets, never a URL."""
        key = (str(receiver), str(result))
        self.notifications[key] = self.notifications.get(key, 0) + 1

    def set_firing_alerts(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Where ``testfleet_alerts_firing`` reads firing alerts per rule at scrape time."""
        self._firing_alerts = source

    def set_open_regressions(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Open regressions per (series kind, figure), as last computed."""
        self.open_regressions = dict(counts)

    # -- probes ----------------------------------------------------------------

    async def probe_lag(self, interval: float = LAG_PROBE_SECONDS) -> None:
        """Measure how late the event loop wakes a sleeper (run by the app's lifespan
        until cancelled): a loop busy with a long turn shows here first."""
        while True:
            before = self._clock.now()
            await self._clock.sleep(interval)
            self.loop_lag_seconds = max(self._clock.now() - before - interval, 0.0)
            self.recent_lags.append(self.loop_lag_seconds)

    def health(self) -> CoordinatorHealth:
        """Recent commit times and loop lag, summarised (the dashboard's overview)."""
        return coordinator_health(self.recent_commits, self.recent_lags)

    def families(self) -> Iterator[Metric]:
        """Every family, gauges read from the live state now (on the event loop)."""
        yield from _state_families(self._view, self._clock.now())
        yield from self._counter_families()
        yield from self._coordinator_families()

    def _counter_families(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "testfleet_attempts",
            "Attempts ended, by outcome and error class.",
            labels=["outcome", "error_class"],
        )
        for (outcome, error_class), count in sorted(self.attempts.items()):
            attempts.add_metric([outcome.value, error_class], count)
        yield attempts
        tests = CounterMetricFamily(
            "testfleet_test_results", "Test results recorded, by outcome.", labels=["outcome"]
        )
        for test_outcome, count in sorted(self.test_outcomes.items()):
            tests.add_metric([test_outcome], count)
        yield tests
        yield CounterMetricFamily(
            "testfleet_benchmark_rows",
            "Benchmark rows recorded (one per batch size of a counted result).",
            value=self.benchmark_rows,
        )
        for name, doc, histograms in (
            (
                "testfleet_queue_wait_seconds",
                "Time from entering the queue to being assigned, by task type.",
                self.queue_wait,
            ),
            (
                "testfleet_attempt_duration_seconds",
                "Time from assignment to an attempt's end, by task type.",
                self.attempt_duration,
            ),
        ):
            family = HistogramMetricFamily(name, doc, labels=["task_type"])
            for task_type, histogram in histograms.items():
                family.add_metric([task_type.value], histogram.buckets(), histogram.total)
            yield family
        notifications = CounterMetricFamily(
            "testfleet_notifications",
            "Alert notifications sent, by receiver kind and result.",
            labels=["receiver", "result"],
        )
        for (receiver, result), count in sorted(self.notifications.items()):
            notifications.add_metric([receiver, result], count)
        yield notifications

    def _coordinator_families(self) -> Iterator[Metric]:
        commit = HistogramMetricFamily(
            "testfleet_store_commit_seconds", "Duration of one DuckDB group commit."
        )
        commit.add_metric([], self.commit_seconds.buckets(), self.commit_seconds.total)
        yield commit
        heartbeats = HistogramMetricFamily(
            "testfleet_heartbeat_lag_seconds",
            "Time from reading a worker's heartbeat off its socket to applying it "
            "(waiting in the loop's queue): whether the coordinator keeps up with its fleet.",
        )
        heartbeats.add_metric([], self.heartbeat_lag.buckets(), self.heartbeat_lag.total)
        yield heartbeats
        yield GaugeMetricFamily(
            "testfleet_leader", "1 on the coordinator that leads (the one serving these).", value=1
        )
        yield GaugeMetricFamily(
            "testfleet_leader_epoch",
            "The epoch it leads in: one more at every change of leader (0 on DuckDB).",
            value=self.leader_epoch,
        )
        now = self._clock.now()
        yield GaugeMetricFamily(
            "testfleet_coordinator_uptime_seconds",
            "Seconds since the coordinator started.",
            value=now - self.started,
        )
        yield GaugeMetricFamily(
            "testfleet_coordinator_start_time_seconds",
            "When the coordinator started (epoch seconds).",
            value=self.started,
        )
        yield GaugeMetricFamily(
            "testfleet_event_loop_lag_seconds",
            f"How late the event loop last woke a {LAG_PROBE_SECONDS} s sleeper.",
            value=self.loop_lag_seconds,
        )
        yield GaugeMetricFamily(
            "testfleet_http_requests_in_flight",
            "REST requests being served now (an open event stream counts while open).",
            value=self.http_in_flight,
        )
        yield GaugeMetricFamily(
            "testfleet_worker_channels",
            "Worker WebSocket channels open now.",
            value=self._worker_channels(),
        )
        regressions = GaugeMetricFamily(
            "testfleet_regressions_open",
            "Open regressions (benchmark figures, test durations), as last computed.",
            labels=["kind", "figure"],
        )
        for (kind, figure), count in sorted(self.open_regressions.items()):
            regressions.add_metric([kind, figure], count)
        yield regressions
        if self.flaky_tests is not None:
            yield GaugeMetricFamily(
                "testfleet_flaky_tests",
                "Tests that passed only on a rerun, or both passed and failed, in the last "
                "day (as last counted).",
                value=self.flaky_tests,
            )
        alerts = GaugeMetricFamily(
            "testfleet_alerts_firing", "Alerts firing now, by rule.", labels=["rule"]
        )
        if self._firing_alerts is not None:
            for rule, count in sorted(self._firing_alerts().items()):
                alerts.add_metric([rule], count)
        yield alerts


def _state_families(view: StateView, now: float) -> Iterator[Metric]:
    """The gauges read from the coordinator's live state at scrape time."""
    by_status = GaugeMetricFamily(
        "testfleet_workers", "Workers known to the coordinator, by status.", labels=["status"]
    )
    for status, count in view.worker_counts().items():
        by_status.add_metric([status.value], count)
    yield by_status
    up = GaugeMetricFamily(
        "testfleet_worker_up", "1 while the worker is connected.", labels=["worker_id"]
    )
    slots = GaugeMetricFamily(
        "testfleet_worker_slots", "Slots of the worker.", labels=["worker_id"]
    )
    running = GaugeMetricFamily(
        "testfleet_worker_running_attempts", "Attempts open on the worker.", labels=["worker_id"]
    )
    heartbeat = GaugeMetricFamily(
        "testfleet_worker_last_heartbeat_timestamp_seconds",
        "When the worker's last heartbeat arrived (epoch seconds).",
        labels=["worker_id"],
    )
    speed = GaugeMetricFamily(
        "testfleet_worker_speed_factor",
        "Measured speed against workers of its class on the same work (1 = typical).",
        labels=["worker_id"],
    )
    slowed = GaugeMetricFamily(
        "testfleet_worker_slowed",
        "1 while the worker's speed factor is well below its own baseline.",
        labels=["worker_id"],
    )
    for worker in view.workers():
        # Workers that left or were revoked stay known until restart: shown down.
        worker_id = worker.record.worker_id
        up.add_metric([worker_id], 1 if worker.connected else 0)
        slots.add_metric([worker_id], worker.record.slots)
        running.add_metric([worker_id], worker.running)
        heartbeat.add_metric([worker_id], worker.record.last_heartbeat)
        speed.add_metric([worker_id], worker.speed.factor)
        slowed.add_metric([worker_id], 1 if worker.speed.slowed else 0)
    yield from (up, slots, running, heartbeat, speed, slowed)
    depth = GaugeMetricFamily(
        "testfleet_queue_depth", "Tasks queued, by priority.", labels=["priority"]
    )
    oldest = GaugeMetricFamily(
        "testfleet_queue_oldest_age_seconds",
        "Age of the oldest queued task, by priority.",
        labels=["priority"],
    )
    for priority, queued in view.queued_by_priority().items():
        depth.add_metric([str(priority)], queued.queued)
        oldest.add_metric([str(priority)], max(now - queued.oldest_queued_at, 0.0))
    yield from (depth, oldest)
    copies = CounterMetricFamily(
        "testfleet_speculative_copies",
        "Speculative copies of straggling attempts: started, won (the copy's result "
        "counted), cancelled (the slower attempt of a pair).",
        labels=["event"],
    )
    for event, count in view.speculation_counts().items():
        copies.add_metric([event.value], count)
    yield copies
    slots_total = view.slots()
    yield GaugeMetricFamily(
        "testfleet_slots", "Slots of connected workers.", value=slots_total.total
    )
    yield GaugeMetricFamily(
        "testfleet_slots_busy",
        "Slots of connected workers running an attempt.",
        value=slots_total.busy,
    )


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()


class InFlightMiddleware:
    """Counts REST requests in flight for ``testfleet_http_requests_in_flight``
    (added by the app factory; the worker channel's WebSockets are counted apart)."""

    def __init__(self, app: _ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.metrics.http_in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.metrics.http_in_flight -= 1
