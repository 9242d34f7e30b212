"""The coordinator's SIGTERM (issue 12, "Graceful shutdown"), short of the process:
once :meth:`CoordinatorLoop.begin_shutdown` is called, health says
``shutting_down`` and submissions are refused with 503 and why; the state
schedules nothing more and declares no worker lost while the sockets close.

The real-process half (exit 0, a restart carries on) is
``tests/integration/test_it_coordinator_sigterm.py``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from test_coordinator_state import SETTINGS, Harness, assigned, spec

from testfleet.coordinator.app import create_app
from testfleet.coordinator.events import ShutdownRequested, Tick, WorkerDisconnected, WorkerFrame
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.domain.enums import WorkerStatus
from testfleet.protocol.messages import Accept
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.tokens import Role
from testfleet.testing import FakeClock

T0 = 1_800_000_000.0


def test_at_shutdown_closed_workers_keep_their_attempts_and_nothing_is_scheduled() -> None:
    h = Harness()
    h.submit(spec("a"))
    _, attempt_id = assigned(h.connect(1, "w1"))["a"]
    h.turn(WorkerFrame(1, Accept(attempt_ids=[attempt_id])))
    h.turn(ShutdownRequested())
    h.turn(WorkerDisconnected(1))  # the server closes the channels on its way out
    h.clock.advance(SETTINGS.heartbeat_timeout_seconds * 2)
    h.turn(Tick())
    assert h.state.workers["w1"].record.status is WorkerStatus.DISCONNECTED
    assert h.task("a").current_attempt_id == attempt_id
    # A worker still connected gets nothing new.
    h.submit(spec("b"))
    assert assigned(h.connect(2, "w2")) == {}


def test_begin_shutdown_refuses_submissions_and_health_says_so(tmp_path: Path) -> None:
    db = tmp_path / "c.duckdb"
    token = create_token_in_file(db, "ci", Role.SUBMITTER, now=T0).secret
    app = create_app(db, CoordinatorSettings(), clock=FakeClock(T0))
    headers = {"Authorization": f"Bearer {token}"}
    task = {"task_id": "t1", "type": "simulated", "config": {"duration_seconds": 0}}
    with TestClient(app) as client:
        assert client.get("/api/v1/health").json() == {"status": "ok"}
        assert client.post("/api/v1/tasks", json=task, headers=headers).status_code == 201
        app.state.loop.begin_shutdown()
        health = client.get("/api/v1/health")
        assert health.status_code == 503
        assert health.json() == {"status": "shutting_down"}
        refused = client.post("/api/v1/tasks", json={**task, "task_id": "t2"}, headers=headers)
        assert refused.status_code == 503
        assert "shutting down" in refused.text
        assert "submit it again" in refused.text
