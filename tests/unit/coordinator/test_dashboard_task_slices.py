"""The dashboard's task page shows a task's slice and marks speculative copies."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient

from testfleet.coordinator.app import create_app
from testfleet.domain.enums import AttemptStatus, HardwareKind, TaskStatus, TaskType, WorkerStatus
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.records import AttemptRecord, TaskRecord, WorkerRecord, WriteBatch
from testfleet.domain.task import TaskSpec
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.tokens import Role
from testfleet.store import Store
from testfleet.testing import FakeClock

T0 = 1_800_000_000.0


def test_the_task_page_shows_the_slice_and_the_copy(tmp_path: Path) -> None:
    path = tmp_path / "dash.duckdb"
    spec = TaskSpec.model_validate(
        {
            "task_id": "prefers-h200",
            "type": "simulated",
            "config": {},
            "requirements": {"hardware": ["cuda"], "gpu_model": "H200"},
            "fallbacks": [{"after_seconds": 600, "requirements": {"hardware": ["cuda"]}}],
        }
    )
    task = TaskRecord(
        spec=spec,
        status=TaskStatus.COMPLETED,
        create_time=T0,
        queued_at=T0,
        end_time=T0 + 700,
        attempts=2,
        slice_index=1,
        worker_id="w2",
    )
    workers = [
        WorkerRecord(
            worker_id=w,
            hostname=w,
            last_heartbeat=T0,
            registration_time=T0,
            status=WorkerStatus.CONNECTED,
            capabilities=WorkerCapabilities(
                hostname=w,
                os="Linux",
                python_version="3.11",
                hardware=[HardwareKind.CPU],
                task_types=[TaskType.SIMULATED],
            ),
            slots=1,
        )
        for w in ("w1", "w2")
    ]
    base = AttemptRecord(
        1, "prefers-h200", "w1", 1, AttemptStatus.CANCELLED, T0 + 600, slice_index=1
    )
    copy = replace(base, attempt_id=2, worker_id="w2", attempt=2, speculative=True)
    copy.status = AttemptStatus.COMPLETED
    with Store(path) as store:
        store.write(WriteBatch(workers=workers, tasks=[task], attempts=[base, copy]))
    secret = create_token_in_file(path, "viewer", Role.VIEWER, now=T0).secret
    with TestClient(create_app(path, clock=FakeClock(T0 + 800))) as client:
        signed_in = client.post(
            "/dashboard/login",
            data={"token": secret, "next": "/dashboard/tasks"},
            follow_redirects=False,
        )
        assert signed_in.status_code == 303, signed_in.text
        page = client.get("/dashboard/tasks/prefers-h200").text
    assert '<dd class="slice">1 of 2</dd>' in page
    assert page.count('<span class="badge">copy</span>') == 1
    assert page.count("slice 1</span>") == 2
