"""Alerts on a real fleet: a worker killed with SIGKILL fires ``worker_lost``,
visible in ``GET /api/v1/alerts`` and ``testfleet alerts``; short thresholds
come from an alerts file given with ``--alerts``. Webhook receivers that hang,
trickle or fail never hold the coordinator up: tasks run meanwhile, and each
notification ends failed after its retries, counted in ``/metrics``."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from it_fleet import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, Fleet
from prometheus_client.parser import text_string_to_metric_families

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


# --------------------------------------------------------------------------
# Webhook receivers that misbehave never block the coordinator.


class Receiver:
    """A loopback HTTP receiver in a thread of this test: ``mode`` says how it
    treats each request (``ok``: 200; ``error``: 500; ``hang``: reads it and
    never answers, holding the connection; ``trickle``: starts a 200 answer one
    byte at a time and never finishes it)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.open_connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}/hook"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection, self._lock_count():
            connection.settimeout(0.2)
            request = b""
            while b"\r\n\r\n" not in request and not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    request += chunk
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            while len(body) < length and not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    body += connection.recv(65536)
            with self._lock:
                self.requests += 1
                self.bodies.append(json.loads(body))
            if self.mode in ("ok", "error"):
                status = b"200 OK" if self.mode == "ok" else b"500 Internal Server Error"
                connection.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
                return
            # Hang: hold the connection, say nothing. Trickle: promise a long
            # answer and send a byte of it every 0.2 s, forever: each read is
            # quicker than any read timeout, so only a limit on the whole try
            # ends it.
            if self.mode == "trickle":
                with contextlib.suppress(OSError):
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            while not self._stop.wait(0.2):
                if self.mode == "trickle":
                    with contextlib.suppress(OSError):
                        connection.sendall(b".")

    @contextlib.contextmanager
    def _lock_count(self) -> Iterator[None]:
        with self._lock:
            self.open_connections += 1
        try:
            yield
        finally:
            with self._lock:
                self.open_connections -= 1


def notification_counts(fleet: Fleet) -> dict[str, float]:
    """``testfleet_notifications_total`` by result, from a real scrape."""
    with fleet.http() as http:
        text = http.get("/metrics").text
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "testfleet_notifications_total"
    }


@pytest.mark.timeout(240)
def test_hanging_and_failing_webhooks_never_block_the_coordinator(fleet, tmp_path):
    receivers = {mode: Receiver(mode) for mode in ("hang", "error", "trickle", "ok")}
    try:
        _check_misbehaving_receivers(fleet, tmp_path, receivers)
    finally:
        for receiver in receivers.values():
            receiver.close()


#: The hanging receiver's per-try limit: long beside a few simulated tasks, so
#: they finish while its first try is still waiting (asserted, not assumed).
HANG_TIMEOUT = 20


def _check_misbehaving_receivers(fleet, tmp_path, receivers) -> None:
    alerts_file = tmp_path / "alerts.toml"
    alerts_file.write_text(
        ALERTS
        + f"""
[[receivers]]
name = "hang"
url = "{receivers["hang"].url}"
timeout_seconds = {HANG_TIMEOUT}
max_attempts = 2
backoff_seconds = 0.1

[[receivers]]
name = "error"
url = "{receivers["error"].url}"
max_attempts = 3
backoff_seconds = 0.1

[[receivers]]
name = "trickle"
url = "{receivers["trickle"].url}"
timeout_seconds = 2
max_attempts = 1

[[receivers]]
name = "ok"
url = "{receivers["ok"].url}"
"""
    )
    fleet.start_coordinator(
        CoordinatorOptions(
            heartbeat_interval=HEARTBEAT_INTERVAL,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            log_level="info",
            extra_args=["--alerts", str(alerts_file)],
        )
    )
    victim = fleet.start_worker("hook-victim")
    fleet.start_worker("hook-runner")
    fleet.wait_for_workers(["hook-victim", "hook-runner"])
    fleet.send_signal(victim, signal.SIGKILL)

    # worker_lost fires; every receiver is sent it. The hanging one holds its
    # first try open.
    fleet.wait_until(
        lambda: receivers["hang"].open_connections >= 1 and receivers["ok"].requests >= 1,
        60,
        "the worker_lost notification to reach the receivers",
    )

    # While it hangs, the coordinator dispatches, completes and answers.
    ids = fleet.client.submit(
        [
            {
                "task_id": f"during-hang-{n}",
                "type": "simulated",
                "config": {"duration_seconds": 0.1},
            }
            for n in range(5)
        ]
    )
    done = fleet.wait_terminal(ids, timeout=60)
    assert {task["status"] for task in done.values()} == {"completed"}
    assert fleet.client.health()
    assert receivers["hang"].open_connections >= 1, "the tasks finished while the receiver hung"
    assert notification_counts(fleet).get("failed", 0) < 3, "the hanging one is not done yet"

    # Each ends as configured: retries per receiver, then failed (or sent).
    fleet.wait_until(
        lambda: notification_counts(fleet).get("failed", 0) >= 3,
        4 * HANG_TIMEOUT + 60,
        "the hanging, failing and trickling notifications to be counted failed",
    )
    counts = notification_counts(fleet)
    assert counts.get("failed") == 3
    assert counts.get("sent") == 1
    assert receivers["error"].requests == 3  # max_attempts = 3
    assert receivers["hang"].requests == 2  # max_attempts = 2, each timed out
    assert receivers["trickle"].requests == 1
    # The payload links to this coordinator's alerts page (the derived public URL).
    body = receivers["ok"].bodies[0]
    assert body["externalURL"] == fleet.url
    assert body["alerts"][0]["generatorURL"] == f"{fleet.url}/dashboard/alerts"
    assert body["alerts"][0]["labels"]["worker_id"] == "hook-victim"
