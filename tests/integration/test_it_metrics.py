"""``/metrics`` of a real coordinator process over TLS, scraped as Prometheus would.

A coordinator and one worker as processes on loopback; the scrape needs a
viewer token (an admin's includes it), the text parses with prometheus-client's
parser, and the counters move as the worker runs tasks.
"""

from __future__ import annotations

import pytest
from it_fleet import Fleet
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.integration]


def scrape(fleet: Fleet) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with fleet.http() as http:
        response = http.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_move_as_a_real_fleet_runs_tasks(fleet: Fleet) -> None:
    fleet.start_coordinator()
    with fleet.http(token=False) as http:
        assert http.get("/metrics").status_code == 401
    fleet.start_worker("w1", slots=2)
    before = scrape(fleet)
    assert before[("testfleet_worker_up", (("worker_id", "w1"),))] == 1
    assert before[("testfleet_worker_channels", ())] == 1

    task_ids = [f"m{n}" for n in range(5)]
    fleet.client.submit([{"task_id": t, "type": "simulated", "config": {}} for t in task_ids])
    fleet.wait_terminal(task_ids)
    after = scrape(fleet)

    completed = ("testfleet_attempts_total", (("error_class", "none"), ("outcome", "completed")))
    assert after[completed] == 5
    wait_count = ("testfleet_queue_wait_seconds_count", (("task_type", "simulated"),))
    assert after[wait_count] == 5
    commits = ("testfleet_store_commit_seconds_count", ())
    assert after[commits] > before.get(commits, 0)
    assert after[("testfleet_coordinator_uptime_seconds", ())] > 0
