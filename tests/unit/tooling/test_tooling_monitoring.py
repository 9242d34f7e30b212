"""monitoring/: the example Grafana dashboard and Prometheus alert rules match /metrics.

Both files name metrics by hand; a renamed or removed metric would leave a
panel empty or an alert that can never fire, silently. So every
``testfleet_*`` name they reference must be served by a real coordinator's
``/metrics`` (in-process, fake clock), counting the ``_total``, ``_bucket``,
``_count`` and ``_sum`` series a counter or histogram family exposes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from testfleet.coordinator.app import create_app
from testfleet.security.tokens import Role
from testfleet.testing import FakeClock
from testfleet.testing.tokens import bearer

MONITORING = Path(__file__).resolve().parents[3] / "monitoring"
METRIC_NAME = re.compile(r"\btestfleet_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def served_names(tmp_path: Path) -> set[str]:
    path = tmp_path / "m.duckdb"
    headers = bearer(path, Role.VIEWER)
    with TestClient(create_app(path, clock=FakeClock()), headers=headers) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    names: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def expressions(node: Any) -> list[str]:
    """Every ``expr`` string anywhere in a parsed JSON or YAML document."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in expressions(value)]
    if isinstance(node, list):
        return [e for item in node for e in expressions(item)]
    return []


def test_the_dashboard_and_the_rules_name_only_served_metrics(tmp_path: Path) -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    rules = yaml.safe_load((MONITORING / "prometheus-alerts.yml").read_text())
    assert dashboard["panels"], "the dashboard has panels"
    alerts = [rule["alert"] for group in rules["groups"] for rule in group["rules"]]
    for wanted in ("TestfleetWorkerLost", "TestfleetQueueStuck", "TestfleetFailureRateHigh"):
        assert wanted in alerts
    referenced = {
        name
        for expr in expressions(dashboard) + expressions(rules)
        for name in METRIC_NAME.findall(expr)
    }
    assert len(referenced) >= 15
    assert referenced - served_names(tmp_path) == set()


def test_every_rule_has_an_expression_and_a_summary() -> None:
    rules = yaml.safe_load((MONITORING / "prometheus-alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert METRIC_NAME.search(rule["expr"]), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
