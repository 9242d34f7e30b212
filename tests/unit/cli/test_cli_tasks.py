"""``testfleet tasks --status``: every status the table shows can be asked for."""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.client import FleetClient

CUDA = "hardware: needs one of [cuda]; connected workers offer [cpu]"


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        task: dict[str, Any] = {
            "task_id": "bench",
            "type": "benchmark",
            "priority": 1,
            "status": "queued",
            "unschedulable_reason": CUDA,
            "worker_id": None,
            "attempts": 0,
            "duration_seconds": None,
            "error": None,
        }
        return httpx.Response(200, json={"tasks": [task], "total": 1, "offset": 0})

    def client_for(coordinator: str | None) -> FleetClient:
        return FleetClient("http://fleet.test", transport=httpx.MockTransport(handle))

    # By module object: ``testfleet.cli.app`` as a dotted name is the Typer app.
    monkeypatch.setattr(sys.modules["testfleet.cli.app"], "client_for", client_for)
    return requests


def test_status_unschedulable_is_accepted_and_sent(asked: list[httpx.Request]) -> None:
    done = CliRunner().invoke(app, ["tasks", "--status", "unschedulable", "--json"])
    assert done.exit_code == 0, done.output
    (request,) = asked
    assert request.url.params.get_list("status") == ["unschedulable"]
    assert json.loads(done.stdout)["tasks"][0]["task_id"] == "bench"


def test_the_table_shows_unschedulable_as_the_status(asked: list[httpx.Request]) -> None:
    done = CliRunner().invoke(app, ["tasks", "-s", "unschedulable", "-s", "failed"])
    assert done.exit_code == 0, done.output
    assert asked[0].url.params.get_list("status") == ["unschedulable", "failed"]
    assert "unschedulable" in done.stdout
    assert "[cuda]" in done.stdout


def test_an_unknown_status_is_refused_listing_the_choices(asked: list[httpx.Request]) -> None:
    done = CliRunner().invoke(app, ["tasks", "--status", "stuck"])
    assert done.exit_code == 2
    assert "unschedulable" in done.stderr
    assert asked == []
