"""``testfleet results regressions`` against a real coordinator app (in-process)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from testfleet.cli import app as cli_app
from testfleet.client import FleetClient
from testfleet.coordinator.app import create_app
from testfleet.domain.benchmark import BenchmarkRow
from testfleet.domain.records import WriteBatch
from testfleet.security.tokens import Role
from testfleet.store import Store
from testfleet.testing.tokens import bearer

T0 = 1_714_564_800.0


def bench(attempt_id: int, batch_size: int, at: float, latency_ms: float) -> BenchmarkRow:
    fields: dict[str, Any] = dict.fromkeys(BenchmarkRow.__dataclass_fields__)
    return BenchmarkRow(
        **fields
        | {
            "attempt_id": attempt_id,
            "batch_size": batch_size,
            "task_id": f"bench-{attempt_id}",
            "worker_id": "w1",
            "recorded_time": at,
            "model": "bert",
            "variant": "seq=128",
            "hardware": "cuda",
            "device_name": "NVIDIA H200",
            "precision": "fp16",
            "is_simulated": False,
            "latency_ms": latency_ms,
            "throughput_items_per_second": 100.0,
        }
    )


def through(app_client: TestClient) -> httpx.MockTransport:
    """Each of the CLI's requests handed to the in-process app (as in
    test_cli_results_api.py, whose module mypy does not see from here)."""

    def handle(request: httpx.Request) -> httpx.Response:
        answer = app_client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.content
        )
        headers = {
            key: value
            for key, value in answer.headers.items()
            if key.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        }
        return httpx.Response(answer.status_code, headers=headers, content=answer.content)

    return httpx.MockTransport(handle)


#: Ten steady runs, two 20 % slower (open), then at batch size 2 a dip that recovered.
STEADY = [10.0, 10.1, 9.9, 10.0, 10.2, 9.8, 10.0, 10.1, 9.9, 10.0]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    path = tmp_path / "fleet.duckdb"
    with Store(path) as store:
        rows = [bench(i, 1, T0 + i, latency_ms=v) for i, v in enumerate([*STEADY, 12.0, 12.1], 1)]
        rows += [
            bench(i, 2, T0 + i, latency_ms=v)
            for i, v in enumerate([*STEADY, 13.0, 13.0, 10.0, 10.0], 1)
        ]
        store.write(WriteBatch(benchmark_rows=rows))
    headers = bearer(path, Role.VIEWER)  # before the app opens the file
    with TestClient(create_app(path), headers=headers) as client:

        def client_for(_: str | None) -> FleetClient:
            return FleetClient("http://testserver", transport=through(client))

        monkeypatch.setattr(sys.modules["testfleet.cli.app"], "client_for", client_for)
        yield lambda *args: CliRunner().invoke(cli_app, ["results", "regressions", *args])


def test_the_table_lists_open_regressions(run: Any) -> None:
    result = run()
    assert result.exit_code == 0, result.output
    assert "open" in result.output
    assert "latency_ms" in result.output
    assert "batch_size=1" in result.output
    assert "batch_size=2" not in result.output  # recovered


def test_json_with_all_includes_the_resolved_one(run: Any) -> None:
    result = run("--json", "--all")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    statuses = {(r["labels"]["batch_size"], r["status"]) for r in document["regressions"]}
    assert statuses == {("1", "open"), ("2", "resolved")}
    assert document["open"] == 1


def test_only_tests_finds_none(run: Any) -> None:
    result = run("--kind", "test")
    assert result.exit_code == 0, result.output
    assert "no regressions open" in result.output


def test_a_bad_kind_is_refused_naming_the_choices(run: Any) -> None:
    result = run("--kind", "model")
    assert result.exit_code == 2
    assert "benchmark" in result.output
