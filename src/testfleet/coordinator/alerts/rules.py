"""The alert rules: pure conditions over one snapshot of the fleet.

Callers: :class:`~testfleet.coordinator.alerts.engine.AlertEngine` builds an
:class:`AlertInputs` from the live state (``StateView``) and the store's
history, then asks :func:`evaluate` for each enabled rule which label sets its
condition holds for right now. Nothing here does I/O or reads a clock
(``inputs.now`` is the engine's clock), so each rule is tested with plain
values; how long a condition has held (the ``for`` duration) is the engine's
business, not the rules'.

Label sets stay small and bounded: a worker id for worker rules, a task and
worker for an overdue attempt (at most the open attempts), none for the
fleet-wide rates, the regression finder's series labels for regressions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from testfleet.coordinator.alerts.config import (
    AttemptOverdueRule,
    FailureRateRule,
    FlakyRateRule,
    InfrastructureErrorsRule,
    NoWorkerRule,
    QueueStuckRule,
    RuleConfig,
    WorkerLostRule,
)
from testfleet.domain.alerts import AlertRule
from testfleet.store.alert_queries import AttemptCounts, TestCounts


@dataclass(frozen=True, slots=True)
class LostWorker:
    """A worker the coordinator declared lost, and when it was last heard from."""

    worker_id: str
    last_heartbeat: float


@dataclass(frozen=True, slots=True)
class OpenAttempt:
    """An attempt assigned or running now, with its task's timeout."""

    attempt_id: int
    task_id: str
    worker_id: str
    started: float
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class RegressionFinding:
    """One benchmark series the regression finder flags (see :class:`RegressionFinder`)."""

    #: The series, e.g. model, batch size, hardware, precision: the alert's labels.
    labels: Mapping[str, str]
    summary: str
    #: How much worse, as a fraction of the baseline (0.15 for 15 % slower).
    value: float


class RegressionFinder(Protocol):
    """Finds benchmark regressions in the store's history at ``now``.

    The regression detection of issue 11 is built elsewhere (a
    ``find_regressions`` function beside the benchmark analysis); the
    coordinator is handed it as this callable and runs it in a worker thread.
    Until it is wired in, :func:`no_regressions` stands in and the
    ``benchmark_regression`` rule never fires."""

    def __call__(self, now: float) -> Sequence[RegressionFinding]: ...


def no_regressions(now: float) -> Sequence[RegressionFinding]:
    """The default :class:`RegressionFinder`: finds none."""
    return ()


NO_ATTEMPTS = AttemptCounts(finished=0, failed=0, infrastructure=0)
NO_TESTS = TestCounts(decided=0, flaky=0)


@dataclass(frozen=True, slots=True)
class AlertInputs:
    """Everything the rules look at, read at one moment (``now``)."""

    now: float
    lost_workers: Sequence[LostWorker] = ()
    #: Queued tasks no connected worker can run, by reason.
    unschedulable: Mapping[str, int] = field(default_factory=dict)
    #: When the oldest queued task that could run now (not unschedulable, not
    #: waiting out a retry delay) was queued; None if there is none.
    oldest_ready_since: float | None = None
    #: When the latest attempt started; None before the first.
    last_assignment: float | None = None
    open_attempts: Sequence[OpenAttempt] = ()
    #: Attempts that ended in the failure-rate rule's window.
    failure_window: AttemptCounts = NO_ATTEMPTS
    #: Attempts that ended in the infrastructure rule's window.
    infrastructure_window: AttemptCounts = NO_ATTEMPTS
    #: Tests recorded in the flaky-rate rule's window.
    tests: TestCounts = NO_TESTS
    regressions: Sequence[RegressionFinding] = ()


@dataclass(frozen=True, slots=True)
class Observation:
    """A rule's condition holds for ``labels`` now, with the figure behind it."""

    labels: Mapping[str, str]
    value: float
    summary: str


def _worker_lost(config: WorkerLostRule, inputs: AlertInputs) -> list[Observation]:
    return [
        Observation(
            {"worker_id": worker.worker_id},
            inputs.now - worker.last_heartbeat,
            f"worker {worker.worker_id} is lost: silent for "
            f"{inputs.now - worker.last_heartbeat:.0f} s",
        )
        for worker in inputs.lost_workers
        # A lost worker that never comes back (an ephemeral id) stops alerting.
        if inputs.now - worker.last_heartbeat < config.resolve_after_seconds
    ]


def _no_worker(config: NoWorkerRule, inputs: AlertInputs) -> list[Observation]:
    waiting = sum(inputs.unschedulable.values())
    if waiting < config.min_tasks:
        return []
    reasons = "; ".join(f"{count}: {reason}" for reason, count in inputs.unschedulable.items())
    return [
        Observation(
            {}, waiting, f"{waiting} queued task(s) no connected worker can run ({reasons})"
        )
    ]


def _queue_stuck(config: QueueStuckRule, inputs: AlertInputs) -> list[Observation]:
    if inputs.oldest_ready_since is None:
        return []
    waited = inputs.now - inputs.oldest_ready_since
    since_assignment = (
        None if inputs.last_assignment is None else inputs.now - inputs.last_assignment
    )
    if waited <= config.stuck_seconds:
        return []
    if since_assignment is not None and since_assignment <= config.stuck_seconds:
        return []
    last = "never" if since_assignment is None else f"{since_assignment:.0f} s ago"
    return [
        Observation(
            {},
            waited,
            f"the oldest ready task has waited {waited:.0f} s; the last attempt started {last}",
        )
    ]


def _attempt_overdue(config: AttemptOverdueRule, inputs: AlertInputs) -> list[Observation]:
    found = []
    for attempt in inputs.open_attempts:
        over = inputs.now - attempt.started - attempt.timeout_seconds
        if over > config.grace_seconds:
            found.append(
                Observation(
                    {"task_id": attempt.task_id, "worker_id": attempt.worker_id},
                    over,
                    f"attempt {attempt.attempt_id} of {attempt.task_id} on {attempt.worker_id} "
                    f"runs {over:.0f} s past its {attempt.timeout_seconds:g} s timeout",
                )
            )
    return found


def _failure_rate(config: FailureRateRule, inputs: AlertInputs) -> list[Observation]:
    counts = inputs.failure_window
    if counts.finished < config.min_attempts:
        return []
    rate = counts.failed / counts.finished
    if rate <= config.threshold:
        return []
    return [
        Observation(
            {},
            rate,
            f"{counts.failed} of {counts.finished} attempts failed in the last "
            f"{config.window_seconds:g} s ({rate:.0%} > {config.threshold:.0%})",
        )
    ]


def _infrastructure(config: InfrastructureErrorsRule, inputs: AlertInputs) -> list[Observation]:
    count = inputs.infrastructure_window.infrastructure
    if count < config.threshold:
        return []
    return [
        Observation(
            {},
            count,
            f"{count} attempts lost or failed for infrastructure in the last "
            f"{config.window_seconds:g} s (threshold {config.threshold})",
        )
    ]


def _regressions(config: RuleConfig, inputs: AlertInputs) -> list[Observation]:
    return [
        Observation(dict(finding.labels), finding.value, finding.summary)
        for finding in inputs.regressions
    ]


def _flaky(config: FlakyRateRule, inputs: AlertInputs) -> list[Observation]:
    tests = inputs.tests
    if tests.decided < config.min_tests:
        return []
    rate = tests.flaky / tests.decided
    if rate <= config.threshold:
        return []
    return [
        Observation(
            {},
            rate,
            f"{tests.flaky} of {tests.decided} tests passed only on a rerun in the last "
            f"{config.window_seconds:g} s ({rate:.0%} > {config.threshold:.0%})",
        )
    ]


_RULES: dict[AlertRule, Callable[..., list[Observation]]] = {
    AlertRule.WORKER_LOST: _worker_lost,
    AlertRule.NO_WORKER_FOR_QUEUED_WORK: _no_worker,
    AlertRule.QUEUE_STUCK: _queue_stuck,
    AlertRule.ATTEMPT_OVERDUE: _attempt_overdue,
    AlertRule.FAILURE_RATE_HIGH: _failure_rate,
    AlertRule.INFRASTRUCTURE_ERRORS: _infrastructure,
    AlertRule.BENCHMARK_REGRESSION: _regressions,
    AlertRule.FLAKY_RATE: _flaky,
}


def evaluate(rule: AlertRule, config: RuleConfig, inputs: AlertInputs) -> list[Observation]:
    """The label sets ``rule``'s condition holds for in ``inputs`` (``config`` is
    its section of the file, of the type its condition takes)."""
    return _RULES[rule](config, inputs)
