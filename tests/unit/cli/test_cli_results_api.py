"""The results API of a real coordinator app over a real DuckDB file, and the CLI on it.

The coordinator app (``create_app``) runs in-process under Starlette's
``TestClient`` (an ``httpx.Client``), which also stands in for the CLI's HTTP
client, so a ``testfleet results`` command goes through the real routes, the
store's SQL and the rendering in one piece. No sockets, no sleeps.
"""

from __future__ import annotations

import csv
import io
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
from testfleet.domain.enums import AttemptStatus, ResultDisposition, TaskStatus, WorkerStatus
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.records import (
    AttemptRecord,
    ResultRecord,
    TaskRecord,
    WorkerRecord,
    WriteBatch,
)
from testfleet.domain.result import SimulationStatus, TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.security.tokens import Role
from testfleet.store import Store
from testfleet.testing.tokens import bearer

MODEL = "bert-base-uncased"
#: 2024-05-01T12:00:00Z
T0 = 1_714_564_800.0


def bench(attempt_id: int, batch_size: int, at: float, **figures: Any) -> BenchmarkRow:
    error_class = figures.get("error_class")
    latency = figures.get("latency_ms", None if error_class else 10.0)
    return BenchmarkRow(
        attempt_id=attempt_id,
        batch_size=batch_size,
        task_id=f"bench-{attempt_id}",
        worker_id="w1",
        recorded_time=at,
        model=figures.get("model", MODEL),
        variant=figures.get("variant", "seq=128"),
        hardware=figures.get("hardware", "cuda"),
        device_name=figures.get("device_name", "NVIDIA H200"),
        precision=figures.get("precision", "fp16"),
        is_simulated=False,
        latency_ms=latency,
        latency_p50_ms=latency,
        latency_p90_ms=latency,
        latency_p99_ms=None if latency is None else latency * 2,
        throughput_items_per_second=figures.get(
            "throughput", None if error_class else batch_size * 100.0
        ),
        memory_mb=None if error_class else 1024.0,
        error_class=error_class,
        error_message="CUDA out of memory" if error_class else None,
        torch_version="2.5.1",
        transformers_version="4.46.0",
        load_note=None,
    )


def counted(rows: list[BenchmarkRow]) -> WriteBatch:
    """The write batch of a counted benchmark result with these rows."""
    first = rows[0]
    spec = TaskSpec(task_id=first.task_id, type="simulated", config={"duration_seconds": 1.0})
    result = TaskResult(
        task_id=first.task_id,
        worker_id="w1",
        status="completed",
        execution_time_seconds=1.0,
        simulation_status=SimulationStatus(is_simulated=False),
    )
    return WriteBatch(
        tasks=[TaskRecord(spec, TaskStatus.COMPLETED, first.recorded_time, first.recorded_time)],
        attempts=[
            AttemptRecord(
                first.attempt_id,
                first.task_id,
                "w1",
                1,
                AttemptStatus.COMPLETED,
                first.recorded_time,
            )
        ],
        results=[
            ResultRecord(
                first.attempt_id,
                first.task_id,
                "w1",
                first.recorded_time,
                ResultDisposition.OUTCOME,
                result,
            )
        ],
        benchmark_rows=rows,
    )


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = Path(tmp_path_factory.mktemp("results")) / "fleet.duckdb"
    with Store(path) as store:
        capabilities = WorkerCapabilities(hostname="w1.lab", os="Linux", python_version="3.11")
        store.write(
            WriteBatch(
                workers=[WorkerRecord("w1", "w1.lab", T0, T0, WorkerStatus.LEFT, capabilities, 1)]
            )
        )
        store.write(counted([bench(1, 1, T0, throughput=100.0), bench(1, 64, T0)]))
        store.write(counted([bench(2, 1, T0 + 3600, throughput=125.0, latency_ms=8.0)]))
        store.write(counted([bench(3, 512, T0 + 7200, error_class="out_of_memory")]))
        store.write(
            counted([bench(4, 1, T0 + 60, hardware="cpu", device_name="Xeon", precision="fp32")])
        )
    headers = bearer(path, Role.VIEWER)
    app = create_app(path)
    with TestClient(app, headers=headers) as client:
        yield client


def through(app_client: TestClient) -> httpx.MockTransport:
    """An httpx transport that hands each request to the app, in-process.

    FleetClient takes an ``httpx`` transport; starlette's TestClient is a client
    of the ``httpx2`` fork with a private transport, so each request is passed
    through it and its answer copied back, as it came. The app keeps running
    when the CLI closes its client after a command.
    """

    def handle(request: httpx.Request) -> httpx.Response:
        answer = app_client.request(
            request.method,
            str(request.url),
            headers=dict(request.headers),
            content=request.content,
        )
        # The body arrives decoded; its encoding and length headers would lie.
        headers = {
            key: value
            for key, value in answer.headers.items()
            if key.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        }
        return httpx.Response(answer.status_code, headers=headers, content=answer.content)

    return httpx.MockTransport(handle)


@pytest.fixture
def cli(coordinator: TestClient, monkeypatch: pytest.MonkeyPatch) -> Any:
    def client_for(_: str | None) -> FleetClient:
        return FleetClient("http://testserver", transport=through(coordinator))

    monkeypatch.setattr(sys.modules["testfleet.cli.app"], "client_for", client_for)

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli_app, ["results", *args])

    return run


# ---------------------------------------------------------------- API


def test_compare_answers_the_latest_run_per_group_with_iso_times(coordinator: TestClient) -> None:
    answer = coordinator.get("/api/v1/results/compare", params={"model": MODEL})

    assert answer.status_code == 200
    document = answer.json()
    assert document["model"] == MODEL
    assert document["filters"] == {"precision": None, "hardware": None, "since": None}
    rows = document["rows"]
    assert [(r["batch_size"], r["hardware"], r["runs"]) for r in rows] == [
        (1, "cpu", 1),
        (1, "cuda", 2),
        (64, "cuda", 1),
        (512, "cuda", 1),
    ]
    latest = rows[1]
    assert latest["recorded_time"] == "2024-05-01T13:00:00Z"
    assert latest["throughput_items_per_second"] == 125.0
    assert latest["latency_p99_ms"] == 16.0
    assert rows[3]["error_class"] == "out_of_memory"
    assert rows[3]["throughput_items_per_second"] is None


def test_compare_filters_by_precision_hardware_and_since(coordinator: TestClient) -> None:
    answer = coordinator.get(
        "/api/v1/results/compare",
        params={
            "model": MODEL,
            "hardware": "cuda",
            "precision": "fp16",
            "since": "2024-05-01T13:00:00",
        },
    )

    document = answer.json()
    assert document["filters"] == {
        "precision": "fp16",
        "hardware": "cuda",
        "since": "2024-05-01T13:00:00Z",
    }
    assert [(r["batch_size"], r["runs"]) for r in document["rows"]] == [(1, 1), (512, 1)]


def test_history_answers_every_run_oldest_first(coordinator: TestClient) -> None:
    answer = coordinator.get(
        "/api/v1/results/history", params={"model": MODEL, "batch_size": 1, "hardware": "cuda"}
    )

    document = answer.json()
    assert document["filters"] == {"batch_size": 1, "precision": None, "hardware": "cuda"}
    assert document["limit"] == 1000
    assert [(r["recorded_time"], r["throughput_change_percent"]) for r in document["rows"]] == [
        ("2024-05-01T12:00:00Z", None),
        ("2024-05-01T13:00:00Z", 25.0),
    ]
    assert document["rows"][1]["latency_change_percent"] == -20.0


def test_models_answers_the_benchmarked_models(coordinator: TestClient) -> None:
    assert coordinator.get("/api/v1/results/models").json() == {"models": [MODEL]}


def test_an_unknown_model_is_an_empty_answer_not_an_error(coordinator: TestClient) -> None:
    for route in ("compare", "history"):
        answer = coordinator.get(f"/api/v1/results/{route}", params={"model": "gpt2"})

        assert answer.status_code == 200
        assert answer.json()["rows"] == []


@pytest.mark.parametrize("route", ["compare", "history"])
def test_the_model_is_required_and_named_when_missing(coordinator: TestClient, route: str) -> None:
    answer = coordinator.get(f"/api/v1/results/{route}")

    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert "model" in error["message"]
    assert error["details"][0]["field"] == "query.model"


@pytest.mark.parametrize(
    ("route", "params", "field"),
    [
        ("compare", {"hardware": "abacus"}, "query.hardware"),
        ("compare", {"precision": "fp8"}, "query.precision"),
        ("compare", {"since": "yesterday-ish"}, "query.since"),
        ("history", {"batch_size": 0}, "query.batch_size"),
        ("history", {"limit": 0}, "query.limit"),
    ],
)
def test_bad_parameters_are_refused_naming_them(
    coordinator: TestClient, route: str, params: dict[str, Any], field: str
) -> None:
    answer = coordinator.get(f"/api/v1/results/{route}", params={"model": MODEL, **params})

    assert answer.status_code == 422
    assert answer.json()["error"]["details"][0]["field"] == field


# ---------------------------------------------------------------- CLI on the real API


def test_cli_compare_against_the_real_coordinator(cli: Any) -> None:
    done = cli("compare", "--model", MODEL)

    assert done.exit_code == 0, done.output
    assert "cuda · NVIDIA H200 · fp16" in done.stdout
    assert "cpu · Xeon · fp32" in done.stdout
    assert "out of memory" in done.stdout
    assert "n=2" in done.stdout


def test_cli_compare_csv_against_the_real_coordinator(cli: Any) -> None:
    done = cli("compare", "--model", MODEL, "--hardware", "cuda", "--csv")

    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(io.StringIO(done.stdout, newline="")))
    assert [(r["batch_size"], r["throughput_items_per_second"], r["runs"]) for r in rows] == [
        ("1", "125.0", "2"),
        ("64", "6400.0", "1"),
        ("512", "", "1"),
    ]
    assert rows[0]["recorded_time"] == "2024-05-01T13:00:00Z"


def test_cli_history_json_against_the_real_coordinator(cli: Any) -> None:
    done = cli("history", "--model", MODEL, "--batch-size", "1", "--json")

    assert done.exit_code == 0, done.output
    rows = json.loads(done.stdout)["rows"]
    assert [(r["hardware"], r["throughput_change_percent"]) for r in rows] == [
        ("cuda", None),
        ("cpu", None),
        ("cuda", 25.0),
    ]


def test_cli_unknown_model_against_the_real_coordinator(cli: Any) -> None:
    done = cli("compare", "--model", "gpt2")

    assert done.exit_code == 0, done.output
    assert f"no benchmark results for model 'gpt2'; models with results: {MODEL}" in done.stdout
