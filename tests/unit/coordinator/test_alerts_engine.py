"""The alert rules and engine on a fake clock: each rule fires and resolves, the
``for`` duration holds a flapping condition in pending, stored rows and a
restart; one scenario on the real coordinator state and DuckDB store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from testfleet.coordinator.alerts.config import AlertsConfig, RulesConfig, parse_alerts_config
from testfleet.coordinator.alerts.engine import AlertEngine
from testfleet.coordinator.alerts.rules import (
    AlertInputs,
    LostWorker,
    OpenAttempt,
    RegressionFinding,
)
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.state import CoordinatorState
from testfleet.coordinator.state_view import StateView
from testfleet.domain.alerts import AlertRule, AlertState, Severity
from testfleet.store import Store
from testfleet.store.alert_queries import AttemptCounts, TestCounts
from testfleet.testing import FakeClock

T0 = 1_800_000_000.0


@pytest.fixture
def store() -> Iterator[Store]:
    with Store(":memory:") as opened:
        yield opened


def engine_for(store: Store, config: AlertsConfig | None = None) -> AlertEngine:
    clock = FakeClock(T0)
    state = CoordinatorState(CoordinatorSettings(), clock.now())
    return AlertEngine(config or AlertsConfig(), StateView(state), store, clock)


def immediate() -> AlertsConfig:
    """Every rule fires at the first evaluation that sees it."""
    sections = {rule.value: {"for_seconds": 0} for rule in AlertRule}
    return parse_alerts_config({"rules": sections})


#: For each rule: inputs under which its condition holds, and the labels it fires with.
HOLDS: dict[AlertRule, tuple[AlertInputs, dict[str, str]]] = {
    AlertRule.WORKER_LOST: (
        AlertInputs(now=T0, lost_workers=[LostWorker("w1", T0 - 20)]),
        {"worker_id": "w1"},
    ),
    AlertRule.NO_WORKER_FOR_QUEUED_WORK: (
        AlertInputs(now=T0, unschedulable={"needs cuda": 3}),
        {},
    ),
    AlertRule.QUEUE_STUCK: (
        AlertInputs(now=T0, oldest_ready_since=T0 - 700, last_assignment=T0 - 650),
        {},
    ),
    AlertRule.ATTEMPT_OVERDUE: (
        AlertInputs(now=T0, open_attempts=[OpenAttempt(7, "t1", "w1", T0 - 100, 60)]),
        {"task_id": "t1", "worker_id": "w1"},
    ),
    AlertRule.FAILURE_RATE_HIGH: (
        AlertInputs(now=T0, failure_window=AttemptCounts(finished=10, failed=6, infrastructure=0)),
        {},
    ),
    AlertRule.INFRASTRUCTURE_ERRORS: (
        AlertInputs(
            now=T0, infrastructure_window=AttemptCounts(finished=9, failed=0, infrastructure=5)
        ),
        {},
    ),
    AlertRule.BENCHMARK_REGRESSION: (
        AlertInputs(
            now=T0,
            regressions=[
                RegressionFinding({"model": "gpt2", "batch_size": "8"}, "15 % slower", 0.15)
            ],
        ),
        {"model": "gpt2", "batch_size": "8"},
    ),
    AlertRule.FLAKY_RATE: (
        AlertInputs(now=T0, tests=TestCounts(decided=40, flaky=8)),
        {},
    ),
}

#: Inputs just on the quiet side of each threshold: nothing fires.
QUIET: dict[AlertRule, AlertInputs] = {
    AlertRule.WORKER_LOST: AlertInputs(now=T0, lost_workers=[LostWorker("w1", T0 - 3600)]),
    AlertRule.NO_WORKER_FOR_QUEUED_WORK: AlertInputs(now=T0, unschedulable={}),
    AlertRule.QUEUE_STUCK: AlertInputs(
        now=T0, oldest_ready_since=T0 - 700, last_assignment=T0 - 10
    ),
    AlertRule.ATTEMPT_OVERDUE: AlertInputs(
        now=T0, open_attempts=[OpenAttempt(7, "t1", "w1", T0, 60)]
    ),
    AlertRule.FAILURE_RATE_HIGH: AlertInputs(
        now=T0, failure_window=AttemptCounts(finished=9, failed=9, infrastructure=0)
    ),
    AlertRule.INFRASTRUCTURE_ERRORS: AlertInputs(
        now=T0, infrastructure_window=AttemptCounts(finished=9, failed=0, infrastructure=4)
    ),
    AlertRule.BENCHMARK_REGRESSION: AlertInputs(now=T0),
    AlertRule.FLAKY_RATE: AlertInputs(now=T0, tests=TestCounts(decided=40, flaky=4)),
}


def test_every_rule_has_a_section_of_the_file() -> None:
    assert set(RulesConfig.model_fields) == {rule.value for rule in AlertRule}
    assert set(HOLDS) == set(AlertRule) == set(QUIET)


@pytest.mark.parametrize("rule", list(AlertRule))
def test_each_rule_fires_and_resolves(store: Store, rule: AlertRule) -> None:
    engine = engine_for(store, immediate())
    inputs, labels = HOLDS[rule]
    fired = engine.step(inputs)
    assert [(a.rule, a.labels, a.state) for a in fired] == [(rule, labels, AlertState.FIRING)]
    assert engine.firing_count() == 1
    assert engine.step(replace(inputs, now=T0 + 5)) == []  # still firing: no change
    resolved = engine.step(replace(QUIET[rule], now=T0 + 10))
    assert [(a.alert_id, a.state, a.resolved_at) for a in resolved] == [
        (fired[0].alert_id, AlertState.RESOLVED, T0 + 10)
    ]
    assert engine.firing_count() == 0


@pytest.mark.parametrize("rule", list(AlertRule))
def test_quiet_inputs_fire_nothing(store: Store, rule: AlertRule) -> None:
    engine = engine_for(store, immediate())
    assert engine.step(QUIET[rule]) == []
    assert engine.pending() == []


def test_the_for_duration_holds_a_flapping_condition_in_pending(store: Store) -> None:
    config = parse_alerts_config({"rules": {"no_worker_for_queued_work": {"for_seconds": 30}}})
    engine = engine_for(store, config)
    holds = AlertInputs(now=T0, unschedulable={"needs cuda": 1})
    # On for 20 s, off, on again for 20 s: it never held 30 s in a row.
    for offset, on in [(0, True), (10, True), (20, True), (25, False), (30, True), (50, True)]:
        inputs = replace(holds, now=T0 + offset) if on else AlertInputs(now=T0 + offset)
        assert engine.step(inputs) == []
    (pending,) = engine.pending()
    assert pending.pending_since == T0 + 30
    assert engine.firing_count() == 0
    fired = engine.step(replace(holds, now=T0 + 60))
    assert [(a.state, a.fired_at, a.pending_since) for a in fired] == [
        (AlertState.FIRING, T0 + 60, T0 + 30)
    ]


def test_one_instance_per_label_set(store: Store) -> None:
    engine = engine_for(store, immediate())
    inputs = AlertInputs(
        now=T0, lost_workers=[LostWorker("w1", T0 - 20), LostWorker("w2", T0 - 20)]
    )
    fired = engine.step(inputs)
    assert sorted(a.labels["worker_id"] for a in fired) == ["w1", "w2"]
    assert all(a.severity is Severity.CRITICAL for a in fired)
    resolved = engine.step(replace(inputs, now=T0 + 5, lost_workers=[LostWorker("w2", T0 - 20)]))
    assert [a.labels for a in resolved] == [{"worker_id": "w1"}]
    # w1 lost again later: a new instance, with a new id.
    again = engine.step(replace(inputs, now=T0 + 9))
    assert [a.labels for a in again] == [{"worker_id": "w1"}]
    assert again[0].alert_id not in {a.alert_id for a in fired}


def test_a_disabled_rule_never_fires(store: Store) -> None:
    config = parse_alerts_config({"rules": {"worker_lost": {"enabled": False}}})
    engine = engine_for(store, config)
    assert engine.step(HOLDS[AlertRule.WORKER_LOST][0]) == []


async def test_fired_and_resolved_alerts_are_stored_and_a_restart_resolves_them(
    store: Store,
) -> None:
    engine = engine_for(store, immediate())
    (fired,) = engine.step(HOLDS[AlertRule.WORKER_LOST][0])
    store.save_alerts([fired])
    (row,) = store.list_alerts()
    assert (row.alert_id, row.state, row.labels, row.fired_at) == (
        fired.alert_id,
        AlertState.FIRING,
        {"worker_id": "w1"},
        T0,
    )
    # A restarted coordinator takes it back, and resolves it once the worker is back.
    restarted = engine_for(store, immediate())
    restarted.restore()
    assert restarted.firing_count() == 1
    resolved = await restarted.evaluate_once()  # its live state has no lost worker
    assert [(a.alert_id, a.state) for a in resolved] == [(fired.alert_id, AlertState.RESOLVED)]
    (row,) = store.list_alerts()
    assert row.state is AlertState.RESOLVED
    assert row.resolved_at == T0


async def test_on_the_real_state_and_store_a_silent_worker_fires_and_failures_are_counted(
    store: Store,
) -> None:
    from test_coordinator_state import SETTINGS, Harness, assigned, result, spec

    from testfleet.coordinator.events import Tick, WorkerFrame
    from testfleet.domain.enums import ResultStatus, WorkerStatus
    from testfleet.protocol.messages import Accept, AttemptResult, Heartbeat, Result

    h = Harness()
    config = parse_alerts_config(
        {"rules": {"failure_rate_high": {"for_seconds": 0, "min_attempts": 1}}}
    )
    engine = AlertEngine(config, StateView(h.state), store, h.clock)
    h.submit(spec("a", retry_policy={"max_retries": 0}), spec("b"))
    effects = h.connect(1, "w1")
    h.connect(2, "w2")
    attempts = {task: attempt for task, (_, attempt) in assigned(effects).items()}
    h.turn(WorkerFrame(1, Accept(attempt_ids=list(attempts.values()))))
    failed = AttemptResult(attempt_id=attempts["a"], result=result("a", "w1", ResultStatus.FAILED))
    h.turn(WorkerFrame(1, Result(results=[failed])))
    for batch in (e.batch for e in h.effects):
        store.write(batch)
    changes = await engine.evaluate_once()
    assert [a.rule for a in changes] == [AlertRule.FAILURE_RATE_HIGH]
    assert "1 of 1 attempts failed" in changes[0].summary

    # w1 goes silent past the heartbeat timeout while w2 keeps beating.
    for _ in range(int(SETTINGS.heartbeat_timeout_seconds) + 1):
        h.clock.advance(1)
        h.turn(WorkerFrame(2, Heartbeat()), Tick())
    assert h.state.workers["w1"].record.status is WorkerStatus.LOST
    changes = await engine.evaluate_once()
    assert [(a.rule, a.labels) for a in changes] == [(AlertRule.WORKER_LOST, {"worker_id": "w1"})]
    stored = {a.rule: a.state for a in store.list_alerts()}
    assert stored[AlertRule.WORKER_LOST] is AlertState.FIRING

    h.connect(3, "w1", session="t" * 16)  # back
    changes = await engine.evaluate_once()
    assert (AlertRule.WORKER_LOST, AlertState.RESOLVED) in [(a.rule, a.state) for a in changes]
