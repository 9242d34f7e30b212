"""A task's ``config.env`` values are never shown back in task views; its names are.

The routes (``GET /api/v1/tasks``, ``GET /api/v1/tasks/{id}``) build every task
through :func:`task_view`, revealing the values to an admin's token only; the
integration suite (``test_it_task_safety``) reads them over HTTP and through
the CLI. The worker's assignment carries the task's spec itself, never this view.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from testfleet.coordinator.api_views import REDACTED, redacted_config, task_view
from testfleet.coordinator.app import create_app
from testfleet.domain.enums import TaskStatus, TaskType
from testfleet.domain.records import TaskRecord
from testfleet.domain.task import TaskSpec
from testfleet.security.tokens import Role
from testfleet.testing import FakeClock
from testfleet.testing.tokens import bearer

SECRET = "hunter2-secret-value"


def record(spec: TaskSpec) -> TaskRecord:
    return TaskRecord(spec=spec, status=TaskStatus.QUEUED, create_time=0.0, queued_at=0.0)


def command_with_env() -> TaskSpec:
    return TaskSpec(
        task_id="with-env",
        type=TaskType.COMMAND,
        config={"argv": ["env"], "env": {"API_TOKEN": SECRET, "MODE": "fast"}, "cwd": "/tmp"},
    )


def test_env_values_are_redacted_and_names_kept() -> None:
    spec = command_with_env()
    view = task_view(record(spec))
    assert view.config == {
        "argv": ["env"],
        "env": {"API_TOKEN": REDACTED, "MODE": REDACTED},
        "cwd": "/tmp",
    }
    assert SECRET not in view.model_dump_json()
    # The record (and so the assignment built from it) keeps the real values.
    assert spec.config["env"]["API_TOKEN"] == SECRET


def test_a_test_tasks_env_is_redacted_too() -> None:
    spec = TaskSpec(
        task_id="chunk",
        type=TaskType.TEST,
        config={
            "run_id": "r",
            "project": {"path": "/srv/p"},
            "node_ids": ["t.py::a"],
            "env": {"DB_PASSWORD": SECRET},
        },
    )
    assert task_view(record(spec)).config["env"] == {"DB_PASSWORD": REDACTED}


def test_reveal_env_shows_the_values_for_callers_allowed_to_see_them() -> None:
    view = task_view(record(command_with_env()), reveal_env=True)
    assert view.config["env"]["API_TOKEN"] == SECRET


def test_configs_without_env_are_shown_unchanged() -> None:
    spec = TaskSpec(task_id="sim", type=TaskType.SIMULATED, config={"duration_seconds": 1.0})
    assert task_view(record(spec)).config == {"duration_seconds": 1.0}
    assert redacted_config({"argv": ["x"], "env": {}}) == {"argv": ["x"], "env": {}}


# ------------------------------------------ over the API, by the caller's role


@pytest.fixture
def app_with_roles(tmp_path: Path) -> Iterator[tuple[TestClient, dict[Role, dict[str, str]]]]:
    """A real app over a fresh file, with a token per API role, and one command
    task with a secret in its env, submitted by the submitter."""
    path = tmp_path / "roles.duckdb"
    headers = {role: bearer(path, role) for role in (Role.VIEWER, Role.SUBMITTER, Role.ADMIN)}
    with TestClient(create_app(path, clock=FakeClock(1_800_000_000.0))) as client:
        document = command_with_env().model_dump(mode="json", exclude_defaults=True)
        submitted = client.post("/api/v1/tasks", json=document, headers=headers[Role.SUBMITTER])
        assert submitted.status_code == 201, submitted.text
        yield client, headers


@pytest.mark.parametrize(
    ("role", "sees_values"),
    [(Role.VIEWER, False), (Role.SUBMITTER, False), (Role.ADMIN, True)],
)
def test_only_an_admin_sees_env_values_in_task_get_and_list(
    app_with_roles: tuple[TestClient, dict[Role, dict[str, str]]], role: Role, sees_values: bool
) -> None:
    client, headers = app_with_roles
    one = client.get("/api/v1/tasks/with-env", headers=headers[role])
    listed = client.get("/api/v1/tasks", headers=headers[role])
    assert one.status_code == 200, one.text
    assert listed.status_code == 200, listed.text
    for env in (one.json()["task"]["config"]["env"], listed.json()["tasks"][0]["config"]["env"]):
        expected = SECRET if sees_values else REDACTED
        assert env == {"API_TOKEN": expected, "MODE": "fast" if sees_values else REDACTED}
    if not sees_values:
        assert SECRET not in one.text
        assert SECRET not in listed.text
