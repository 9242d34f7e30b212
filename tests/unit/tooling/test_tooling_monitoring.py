"""monitoring/: the example Grafana dashboard and Prometheus alert rules match /metrics.

Both files name metrics and labels by hand; a renamed metric, a label that
does not exist or a label value the code never writes would leave a panel
empty or an alert that can never fire, silently. So:

* every expression parses with a real PromQL parser (``promql-parser``, the
  Python binding of the Rust parser GreptimeDB uses);
* every metric a selector names is served by a coordinator's ``/metrics``
  after it ran tasks (the in-process fleet: the real loop and store, an agent
  on memory channels, a fake clock), with the notification, regression and
  alert figures fed through the hooks the app wires to them;
* every label a selector matches on, or an expression groups (``by``) or
  matches (``on``) by, is a label of the metrics it applies to, and every
  value an ``=`` or ``=~`` matcher names is one the code writes (the enum
  behind the label, or a value seen in the scrape);
* the rules file has Prometheus's rule-file structure (groups of rules with
  ``alert``, ``expr``, a valid ``for``, a ``severity`` label and a summary),
  and every dashboard panel's query is there to check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from testfleet.coordinator.flaky_tests_metric import FlakyTestsGauge
from testfleet.coordinator.metrics import Metrics
from testfleet.coordinator.state_view import StateView
from testfleet.domain.alerts import AlertRule, NotificationStatus, ReceiverKind
from testfleet.domain.enums import AttemptStatus, ErrorClass, TaskType, WorkerStatus
from testfleet.domain.pytest_tasks import TestOutcome
from testfleet.domain.task import TaskSpec
from testfleet.testing.fleet import in_process_fleet

MONITORING = Path(__file__).resolve().parents[3] / "monitoring"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
#: The values a label can take, from the enums the metrics module writes.
LABEL_VALUES: dict[str, set[str]] = {
    "status": {s.value for s in WorkerStatus},
    # Attempts' outcomes and tests' outcomes share the label name.
    "outcome": {s.value for s in AttemptStatus} | {o.value for o in TestOutcome},
    "error_class": {e.value for e in ErrorClass} | {"none"},
    "task_type": {t.value for t in TaskType},
    "receiver": {k.value for k in ReceiverKind},
    "result": {s.value for s in NotificationStatus},
    "rule": {r.value for r in AlertRule},
}

#: metric name -> label name -> values seen.
Served = dict[str, dict[str, set[str]]]


def simulated(task_id: str, **changes: Any) -> TaskSpec:
    config = {"duration_seconds": 1.0} | changes.pop("config", {})
    return TaskSpec.model_validate(
        {"task_id": task_id, "type": "simulated", "config": config, **changes}
    )


def _samples(metrics: Metrics, served: Served) -> None:
    text = generate_latest(metrics.registry).decode()
    for family in text_string_to_metric_families(text):
        served.setdefault(family.name, {})
        for sample in family.samples:
            labels = served.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """What a coordinator's /metrics serves once it has queued and run tasks."""
    import asyncio

    async def run() -> Served:
        found: Served = {}
        path = tmp_path_factory.mktemp("monitoring") / "m.duckdb"
        async with in_process_fleet(path) as fleet:
            metrics = Metrics(
                fleet.clock, StateView(fleet.loop.state), lambda: len(fleet.loop.connections)
            )
            fleet.loop.observer = metrics
            # The hooks the app wires to the notifier, the regression watch and
            # the alert engine (coordinator/app.py), fed as they would be.
            metrics.count_notification(
                ReceiverKind.ALERTMANAGER.value, NotificationStatus.FAILED.value
            )
            metrics.set_open_regressions({("benchmark", "throughput"): 1})
            metrics.set_firing_alerts(lambda: {AlertRule.WORKER_LOST.value: 1})
            # Simulated tasks record no test results; one pytest row, as
            # observe_batch counts it, gives that counter its series.
            metrics.test_outcomes[TestOutcome.PASSED.value] = 1
            await fleet.loop.submit([simulated("ok"), simulated("ok2", priority=3)])
            await fleet.loop.submit([simulated("bad", config={"fail_probability": 1.0})])
            _samples(metrics, found)  # queued: the queue's gauges have series
            worker = fleet.add_worker("w1", slots=2, seed=1)
            await fleet.wait_until(worker.agent.connected.is_set)

            def done() -> bool:
                tasks = [fleet.store.get_task(t) for t in ("ok", "ok2", "bad")]
                return all(t is not None and t.status.is_terminal for t in tasks)

            await fleet.wait_until(done)
            # The flaky-tests gauge is served once /metrics has counted it from
            # the store (metrics_api.py asks the app's FlakyTestsGauge first).
            await FlakyTestsGauge(fleet.store, metrics, fleet.clock).refresh_if_stale()
            _samples(metrics, found)
        return found

    return asyncio.run(run())


def expressions(node: Any, where: str = "") -> list[tuple[str, str]]:
    """Every ``expr`` string anywhere in a parsed JSON or YAML document, with where it is."""
    if isinstance(node, dict):
        here = str(node.get("alert") or node.get("title") or where)
        found = [(here, node["expr"])] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value, here)]
    if isinstance(node, list):
        return [e for item in node for e in expressions(item, where)]
    return []


def dashboard() -> Any:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def rules() -> Any:
    return yaml.safe_load((MONITORING / "prometheus-alerts.yml").read_text())


def all_expressions() -> list[tuple[str, str]]:
    return expressions(dashboard()) + expressions(rules())


def selectors(node: Any) -> list[Any]:
    """Every vector selector in a parsed expression."""
    if isinstance(node, promql_parser.VectorSelector):
        return [node]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql_parser.BinaryExpr):
        return selectors(node.lhs) + selectors(node.rhs)
    if isinstance(node, promql_parser.Call):
        return [s for arg in node.args for s in selectors(arg)]
    if isinstance(node, promql_parser.AggregateExpr):
        return selectors(node.expr) + (selectors(node.param) if node.param is not None else [])
    if isinstance(node, promql_parser.ParenExpr):
        return selectors(node.expr)
    if isinstance(node, promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        return selectors(node.expr)
    return []


def groupings(node: Any) -> list[tuple[list[str], Any]]:
    """Every ``by (...)`` and ``on (...)`` label list, with the expression it applies to."""
    found: list[tuple[list[str], Any]] = []
    if isinstance(node, promql_parser.AggregateExpr):
        grouping = node.modifier
        if grouping is not None and grouping.type == promql_parser.AggModifierType.By:
            found.append((list(grouping.labels), node.expr))
        found += groupings(node.expr)
    elif isinstance(node, promql_parser.BinaryExpr):
        binary = node.modifier
        matching = binary.matching if binary is not None else None
        if matching is not None and matching.type == promql_parser.LabelModifierType.Include:
            found.append((list(matching.labels), node))
        found += groupings(node.lhs) + groupings(node.rhs)
    elif isinstance(node, promql_parser.Call):
        found += [g for arg in node.args for g in groupings(arg)]
    elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr):
        found += groupings(node.expr)
    return found


def labels_of(name: str, served: Served) -> set[str]:
    labels = set(served.get(name, {}))
    return labels | ({"le"} if name.endswith("_bucket") else set())


def test_every_expression_parses_as_promql() -> None:
    found = all_expressions()
    assert len(found) >= 20, "the dashboard's queries and the rules' expressions"
    for where, expr in found:
        try:
            promql_parser.parse(expr)
        except Exception as exc:  # the parser raises its own error types
            pytest.fail(f"{where}: {expr!r} is not PromQL: {exc}")


def test_the_dashboard_and_the_rules_name_only_served_metrics(served: Served) -> None:
    referenced: dict[str, str] = {}
    for where, expr in all_expressions():
        for selector in selectors(promql_parser.parse(expr)):
            assert selector.name, f"{where}: a selector without a metric name"
            referenced[selector.name] = where
    assert len(referenced) >= 15
    missing = {name: where for name, where in referenced.items() if name not in served}
    assert missing == {}, "named in monitoring/ but not served by /metrics"


def test_every_label_used_is_a_label_of_its_metric_with_values_the_code_writes(
    served: Served,
) -> None:
    problems: list[str] = []
    for where, expr in all_expressions():
        parsed = promql_parser.parse(expr)
        for selector in selectors(parsed):
            for matcher in selector.matchers.matchers:
                if matcher.name == "__name__":
                    continue
                if matcher.name not in labels_of(selector.name, served):
                    problems.append(f"{where}: {selector.name} has no label {matcher.name!r}")
                    continue
                known = LABEL_VALUES.get(matcher.name, set()) | served[selector.name].get(
                    matcher.name, set()
                )
                if matcher.op in (promql_parser.MatchOp.Equal, promql_parser.MatchOp.NotEqual):
                    wanted = [matcher.value]
                elif re.fullmatch(r"[a-z_|]+", matcher.value):
                    wanted = matcher.value.split("|")  # a plain alternation
                else:
                    wanted = []
                problems += [
                    f"{where}: {selector.name}{{{matcher.name}={value!r}}} is never written"
                    for value in wanted
                    if value not in known
                ]
        for labels, applies_to in groupings(parsed):
            inside = {label for s in selectors(applies_to) for label in labels_of(s.name, served)}
            problems += [
                f"{where}: grouped by {label!r}, a label none of its metrics has"
                for label in labels
                if label not in inside
            ]
    assert problems == []


def test_the_rules_file_has_prometheus_rule_file_structure() -> None:
    document = rules()
    assert set(document) == {"groups"}
    names: set[str] = set()
    for group in document["groups"]:
        assert isinstance(group["name"], str)
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            where = rule.get("alert", "?")
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, where
            assert isinstance(rule["alert"], str)
            assert rule["alert"] not in names, f"{where}: named twice"
            names.add(rule["alert"])
            assert isinstance(rule["expr"], str)
            assert DURATION.match(str(rule.get("for", "0s"))), f"{where}: for {rule.get('for')!r}"
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}, where
            assert rule["annotations"]["summary"], where
    for wanted in ("TestfleetWorkerLost", "TestfleetQueueStuck", "TestfleetFailureRateHigh"):
        assert wanted in names


def test_every_dashboard_panel_has_a_query_to_check() -> None:
    document = dashboard()
    assert document["panels"], "the dashboard has panels"
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in document["panels"]:
        if panel.get("type") in ("row", "text"):
            continue
        targets = panel.get("targets", [])
        assert targets, f"panel {panel.get('title')!r} has no query"
        assert all(isinstance(t.get("expr"), str) and t["expr"] for t in targets), panel["title"]
