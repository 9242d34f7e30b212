"""Alerts on a real fleet: a worker killed with SIGKILL fires ``worker_lost``,
visible in ``GET /api/v1/alerts`` and ``testfleet alerts``; short thresholds
come from an alerts file given with ``--alerts``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from it_fleet import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT

from testfleet.local_fleet import CoordinatorOptions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALERTS = """
evaluation_interval_seconds = 0.2

[rules.worker_lost]
for_seconds = 0
"""


@pytest.mark.timeout(120)
def test_a_killed_worker_fires_worker_lost_in_the_alerts_api(fleet, tmp_path):
    alerts_file = tmp_path / "alerts.toml"
    alerts_file.write_text(ALERTS)
    fleet.start_coordinator(
        CoordinatorOptions(
            heartbeat_interval=HEARTBEAT_INTERVAL,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            log_level="info",
            extra_args=["--alerts", str(alerts_file)],
        )
    )
    victim = fleet.start_worker("alert-victim")
    fleet.wait_for_workers(["alert-victim"])
    assert fleet.client.alerts()["firing"] == 0

    fleet.send_signal(victim, signal.SIGKILL)

    def lost_alert():
        answer = fleet.client.alerts()
        return next(
            (
                a
                for a in answer["alerts"]
                if a["rule"] == "worker_lost"
                and a["labels"] == {"worker_id": "alert-victim"}
                and a["state"] == "firing"
            ),
            None,
        )

    alert = fleet.wait_until(lost_alert, 60, "the worker_lost alert to fire")
    assert alert["severity"] == "critical"
    assert "alert-victim" in alert["summary"]

    shown = subprocess.run(
        [sys.executable, "-m", "testfleet", "alerts", "--json"],
        capture_output=True,
        text=True,
        env=fleet.env(),
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)
    assert any(a["alert_id"] == alert["alert_id"] for a in listed["alerts"])
