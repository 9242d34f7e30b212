"""Issue 14's task fields over the REST API: fallbacks, idempotent and expected_seconds are
taken, checked with errors naming the field, stored, and shown back with the slice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from testfleet.coordinator.app import create_app
from testfleet.security.tokens import Role
from testfleet.testing import FakeClock
from testfleet.testing.tokens import bearer


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    path = tmp_path / "fallbacks.duckdb"
    headers = bearer(path, Role.SUBMITTER)
    with TestClient(create_app(path, clock=FakeClock(1_800_000_000.0))) as test_client:
        yield test_client, headers


def document(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "task_id": "prefers-h200",
        "type": "simulated",
        "config": {"duration_seconds": 1.0},
        "requirements": {"hardware": ["cuda"], "gpu_model": "H200"},
        "fallbacks": [{"after_seconds": 600, "requirements": {"hardware": ["cuda"]}}],
    }
    base.update(fields)
    return base


def test_fallbacks_and_hints_are_taken_and_shown_back(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    test_client, headers = client
    posted = test_client.post(
        "/api/v1/tasks", json=document(expected_seconds=90, idempotent=True), headers=headers
    )
    assert posted.status_code == 201, posted.text
    shown = test_client.get("/api/v1/tasks/prefers-h200", headers=headers)
    assert shown.status_code == 200, shown.text
    task = shown.json()["task"]
    assert task["fallbacks"] == [{"after_seconds": 600.0, "requirements": {"hardware": ["cuda"]}}]
    assert task["slice_index"] == 0
    assert task["idempotent"] is True
    assert task["expected_seconds"] == 90.0


def test_a_command_is_not_idempotent_unless_it_says_so(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    test_client, headers = client
    command = {"task_id": "cmd", "type": "command", "config": {"argv": ["true"]}}
    assert test_client.post("/api/v1/tasks", json=command, headers=headers).status_code == 201
    task = test_client.get("/api/v1/tasks/cmd", headers=headers).json()["task"]
    assert task["idempotent"] is False
    assert task["fallbacks"] == []


@pytest.mark.parametrize(
    ("fallbacks", "field", "words"),
    [
        (
            [
                {"after_seconds": 600, "requirements": {}},
                {"after_seconds": 300, "requirements": {}},
            ],
            "fallbacks[1].after_seconds",
            "fallbacks[1].after_seconds is 300 but must be greater than 600",
        ),
        ([{"after_seconds": -5}], "fallbacks[0].after_seconds", "greater than or equal to 0"),
        ([{"after_seconds": 5, "requirements": {"gpu": "x"}}], "fallbacks[0].requirements.gpu", ""),
        ([{"after_seconds": i + 1} for i in range(9)], "fallbacks", "at most 8"),
    ],
)
def test_bad_fallbacks_are_refused_naming_the_field(
    client: tuple[TestClient, dict[str, str]], fallbacks: Any, field: str, words: str
) -> None:
    test_client, headers = client
    posted = test_client.post("/api/v1/tasks", json=document(fallbacks=fallbacks), headers=headers)
    assert posted.status_code == 422, posted.text
    details = posted.json()["error"]["details"]
    assert any(d["field"] == field and words in d["problem"] for d in details), details
