"""The backup route (a snapshot streamed to an admin) and the scheduled backups."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from testfleet.coordinator.app import create_app
from testfleet.coordinator.backup_schedule import (
    PARTIAL,
    BackupSchedule,
    backup_name,
    scheduled_backups,
)
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.domain.enums import TaskStatus
from testfleet.domain.records import TaskRecord, WriteBatch
from testfleet.domain.task import TaskSpec
from testfleet.security.audit import AuditKind, AuditOutcome
from testfleet.security.tokens import Role
from testfleet.store import Store, StoreError
from testfleet.store.backup import SnapshotReport
from testfleet.store.restore import restore_snapshot
from testfleet.testing import FakeClock
from testfleet.testing.tokens import bearer

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
BACKUP = "/api/v1/admin/backup"


def seed(path: Path, count: int) -> list[str]:
    ids = [f"bk-{n:03d}" for n in range(count)]
    with Store(path) as store:
        store.write(WriteBatch(tasks=[task(i) for i in ids]))
    return ids


def task(task_id: str) -> TaskRecord:
    spec = TaskSpec.model_validate({"task_id": task_id, "type": "simulated"})
    return TaskRecord(spec=spec, status=TaskStatus.QUEUED, create_time=T0, queued_at=T0)


async def inline(function: Callable[..., Any], *args: Any) -> Any:
    """Run the snapshot on the event loop: no thread, nothing to wait for."""
    return function(*args)


def test_an_admin_downloads_a_snapshot_that_restores(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    ids = seed(db, 12)
    admin, viewer = bearer(db, Role.ADMIN), bearer(db, Role.VIEWER, name="v")
    backups = tmp_path / "backups"
    backups.mkdir()
    app = create_app(db, CoordinatorSettings(backup_dir=backups), clock=FakeClock(T0))
    with TestClient(app) as client:
        assert client.post(BACKUP, headers=viewer).status_code == 403
        answer = client.post(BACKUP, headers=admin)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-testfleet-tasks"] == "12"
        assert answer.headers["x-testfleet-encrypted"] == "false"
    (tmp_path / "got.duckdb").write_bytes(answer.content)
    # Sent, then deleted: nothing is left in the directory.
    assert list(backups.iterdir()) == []
    report = restore_snapshot(tmp_path / "got.duckdb", tmp_path / "restored.duckdb")
    assert report.rows["distributed_tasks"] == 12
    with Store(tmp_path / "restored.duckdb") as store:
        assert store.all_task_ids() == set(ids)


def test_one_backup_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "fleet.duckdb"
    seed(db, 1)
    admin = bearer(db, Role.ADMIN)
    release, started = threading.Event(), threading.Event()
    original = Store.snapshot

    def slow_snapshot(self: Store, name: str) -> SnapshotReport:
        started.set()
        release.wait(30)
        return original(self, name)

    monkeypatch.setattr(Store, "snapshot", slow_snapshot)
    app = create_app(db, CoordinatorSettings(), clock=FakeClock(T0))
    with TestClient(app) as client:
        first: list[int] = []
        thread = threading.Thread(
            target=lambda: first.append(client.post(BACKUP, headers=admin).status_code)
        )
        thread.start()
        assert started.wait(30)
        second = client.post(BACKUP, headers=admin)
        release.set()
        thread.join(30)
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "backup_in_progress"
    assert first == [200]
    with Store(db) as store:
        events = [e for e in store.audit_events() if e.kind is AuditKind.BACKUP_TAKEN]
    assert sorted(e.outcome for e in events) == [AuditOutcome.ALLOWED, AuditOutcome.REFUSED]


def test_a_backup_is_audited_with_who_took_it(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    seed(db, 3)
    admin = bearer(db, Role.ADMIN, name="alice")
    app = create_app(db, CoordinatorSettings(), clock=FakeClock(T0))
    with TestClient(app) as client:
        assert client.post(BACKUP, headers=admin).status_code == 200
        audit = client.get("/api/v1/audit", headers=admin, params={"actor": "alice"})
    assert audit.status_code == 200, audit.text
    (event,) = [e for e in audit.json()["events"] if e["kind"] == "backup_taken"]
    assert event["outcome"] == "allowed"
    assert event["actor"] == "alice"
    assert event["detail"]["tasks"] == 3


def test_backup_names_sort_in_time_order() -> None:
    assert backup_name(T0) == "testfleet-backup-20270115T080000Z.duckdb"
    assert backup_name(T0 + 3600) > backup_name(T0)


async def test_scheduled_backups_follow_the_clock_and_keep_the_newest(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "not-ours.duckdb").write_bytes(b"x")
    clock = FakeClock(T0)
    taken: list[str] = []

    def take(name: str) -> SnapshotReport:
        (backups / name).write_bytes(b"snapshot")
        taken.append(name)
        return SnapshotReport(backups / name, 7, {"distributed_tasks": 1}, 8, 0.0)

    schedule = BackupSchedule(take, backups, every=3600, keep=3, clock=clock, offload=inline)
    runner = asyncio.create_task(schedule.run())
    for hour in range(1, 6):
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(taken) == hour - 1  # not before the hour
        clock.advance(3600)
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(taken) == hour
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    # Each written under a partial name, then renamed once whole.
    assert taken == [PARTIAL + backup_name(T0 + 3600 * h) for h in range(1, 6)]
    kept = [backup_name(T0 + 3600 * h) for h in (3, 4, 5)]
    assert [p.name for p in scheduled_backups(backups)] == kept
    assert not list(backups.glob(PARTIAL + "*"))
    assert (backups / "not-ours.duckdb").exists()


async def test_a_failed_scheduled_backup_is_logged_and_the_next_one_runs(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    calls: list[str] = []

    def take(name: str) -> SnapshotReport:
        calls.append(name)
        raise StoreError("could not write a snapshot: No space left on device")

    schedule = BackupSchedule(take, tmp_path, every=60, keep=2, clock=clock, offload=inline)
    assert await schedule.backup_once() is None
    clock.advance(60)
    assert await schedule.backup_once() is None
    assert schedule.failed == 2
    assert len(calls) == 2


def test_health_says_degraded_with_the_reason_while_commits_cannot_be_made(
    tmp_path: Path,
) -> None:
    db = tmp_path / "fleet.duckdb"
    seed(db, 1)
    viewer = bearer(db, Role.VIEWER)
    submitter = bearer(db, Role.SUBMITTER, name="s")
    app = create_app(db, CoordinatorSettings(), clock=FakeClock(T0))
    with TestClient(app) as client:
        assert client.get("/api/v1/health").json() == {"status": "ok"}
        # Answered once committed: no turn is left in flight to clear the flag below.
        accepted = client.post(
            "/api/v1/tasks", headers=submitter, json={"task_id": "y", "type": "simulated"}
        )
        assert accepted.status_code == 201
        app.state.loop.degraded = "could not write: No space left on device"
        answer = client.get("/api/v1/health")
        assert answer.status_code == 503
        assert answer.json() == {
            "status": "degraded",
            "error": "could not write: No space left on device",
        }
        # A token adds the details, and the status stays.
        assert client.get("/api/v1/health", headers=viewer).json()["status"] == "degraded"
        refused = client.post(
            "/api/v1/tasks",
            headers=submitter,
            json={"task_id": "x", "type": "simulated"},
        )
        assert refused.status_code == 503
        assert "No space left on device" in refused.json()["error"]["message"]
        app.state.loop.degraded = None
        assert client.get("/api/v1/health").json() == {"status": "ok"}
