"""``POST /api/v1/tasks`` past the per-submitter quota: 429 ``quota_exceeded``, audited.

A real app in-process on a fake clock (the state's rules are in
``test_submitter_quota.py``; a real process in ``test_it_limits.py``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from testfleet.coordinator.app import create_app
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.security.audit import AuditKind, AuditOutcome
from testfleet.security.tokens import Role
from testfleet.store import Store
from testfleet.testing import FakeClock
from testfleet.testing.tokens import bearer


def tasks(*task_ids: str) -> list[dict[str, object]]:
    config = {"duration_seconds": 0}
    return [{"task_id": t, "type": "simulated", "config": config} for t in task_ids]


def test_a_submission_past_the_quota_is_429_and_audited(tmp_path: Path) -> None:
    path = tmp_path / "quota.duckdb"
    alice = bearer(path, Role.SUBMITTER, "alice")
    bob = bearer(path, Role.SUBMITTER, "bob")
    settings = CoordinatorSettings(max_queued_per_submitter=2)
    with TestClient(create_app(path, settings, clock=FakeClock(1_800_000_000.0))) as client:
        assert client.post("/api/v1/tasks", json=tasks("a1"), headers=alice).status_code == 201
        refused = client.post("/api/v1/tasks", json=tasks("a2", "a3"), headers=alice)
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "quota_exceeded"
        assert "the limit is 2" in error["message"]
        assert "--max-queued-per-submitter" in error["message"]
        assert error["details"] == []
        assert "Retry-After" not in refused.headers  # waiting alone frees nothing
        assert client.post("/api/v1/tasks", json=tasks("b1", "b2"), headers=bob).status_code == 201
        assert client.get("/api/v1/tasks/a2", headers=alice).status_code == 404
    store = Store(path)
    try:
        events = [e for e in store.audit_events() if e.kind is AuditKind.QUOTA_EXCEEDED]
    finally:
        store.close()
    assert len(events) == 1
    assert events[0].actor == "alice"
    assert events[0].outcome is AuditOutcome.REFUSED
    assert events[0].detail["tasks"] == 2
