"""``testfleet results`` against a fake coordinator (``httpx.MockTransport``).

The fake answers ``/api/v1/results/...`` with canned documents shaped like the
real API's and records every request, so the tests check what the CLI asks
for and how it shows the answer: the table, ``--csv`` (parsed back with the csv
module), ``--json``, the message for a model without results, and errors.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.cli.results import COMPARE_COLUMNS, HISTORY_COLUMNS, parse_since
from testfleet.client import FleetClient

MODEL = "bert-base-uncased"


def figures(
    batch_size: int,
    hardware: str,
    device_name: str,
    precision: str,
    *,
    throughput: float | None,
    latency: float | None = None,
    recorded_time: str = "2024-05-01T12:00:00Z",
    error_class: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "hardware": hardware,
        "device_name": device_name,
        "precision": precision,
        "batch_size": batch_size,
        "is_simulated": False,
        "recorded_time": recorded_time,
        "task_id": f"bench-{batch_size}-{hardware}",
        "worker_id": f"{hardware}-worker",
        "attempt_id": 7,
        "throughput_items_per_second": throughput,
        "latency_ms": latency,
        "latency_p50_ms": latency,
        "latency_p90_ms": None if latency is None else latency * 1.2,
        "latency_p99_ms": None if latency is None else latency * 2,
        "memory_mb": None if throughput is None else 1234.5,
        "error_class": error_class,
        "error_message": "CUDA out of memory. Tried to allocate 8.00 GiB" if error_class else None,
        "torch_version": "2.5.1",
        "transformers_version": "4.46.0",
    }
    row.update(extra)
    return row


COMPARE = {
    "model": MODEL,
    "filters": {"precision": None, "hardware": None, "since": None},
    "rows": [
        figures(1, "cpu", "Intel Xeon", "fp32", throughput=41.5, latency=24.1, runs=1),
        figures(1, "cuda", "NVIDIA H200", "fp16", throughput=812.25, latency=1.23, runs=3),
        figures(8, "cpu", "Intel Xeon", "fp32", throughput=96.0, latency=83.3, runs=1),
        figures(8, "cuda", "NVIDIA H200", "fp16", throughput=5321.0, latency=1.5, runs=1),
        figures(512, "cpu", "Intel Xeon", "fp32", throughput=101.0, latency=5069.3, runs=1),
        figures(
            512,
            "cuda",
            "NVIDIA H200",
            "fp16",
            throughput=None,
            error_class="out_of_memory",
            runs=1,
            failed_runs=1,
        ),
    ],
}

HISTORY = {
    "model": MODEL,
    "filters": {"batch_size": None, "precision": None, "hardware": None},
    "limit": 1000,
    "rows": [
        figures(
            8,
            "cuda",
            "NVIDIA H200",
            "fp16",
            throughput=4000.0,
            latency=2.0,
            recorded_time="2024-05-01T12:00:00Z",
            throughput_change_percent=None,
            latency_change_percent=None,
        ),
        figures(
            8,
            "cuda",
            "NVIDIA H200",
            "fp16",
            throughput=5000.0,
            latency=1.6,
            recorded_time="2024-05-02T12:00:00Z",
            throughput_change_percent=25.0,
            latency_change_percent=-20.0,
        ),
        figures(
            8,
            "cuda",
            "NVIDIA H200",
            "fp16",
            throughput=None,
            recorded_time="2024-05-03T08:30:00Z",
            error_class="out_of_memory",
            throughput_change_percent=None,
            latency_change_percent=None,
        ),
    ],
}


@dataclass
class FakeCoordinator:
    """Answers the results API from canned documents; remembers what it was asked."""

    compare: dict[str, Any] = field(default_factory=lambda: COMPARE)
    history: dict[str, Any] = field(default_factory=lambda: HISTORY)
    models: list[str] = field(default_factory=lambda: [MODEL, "gpt2"])
    requests: list[httpx.Request] = field(default_factory=list)
    refuse: tuple[int, dict[str, Any]] | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.refuse is not None:
            status, body = self.refuse
            return httpx.Response(status, json=body)
        path = request.url.path
        known = request.url.params.get("model") in self.models
        if path == "/api/v1/results/compare":
            return httpx.Response(200, json=self.compare if known else {**self.compare, "rows": []})
        if path == "/api/v1/results/history":
            return httpx.Response(200, json=self.history if known else {**self.history, "rows": []})
        if path == "/api/v1/results/models":
            return httpx.Response(200, json={"models": self.models})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    def params(self, index: int = 0) -> dict[str, str]:
        return dict(self.requests[index].url.params)


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> FakeCoordinator:
    fake = FakeCoordinator()

    def client_for(coordinator: str | None) -> FleetClient:
        return FleetClient(
            coordinator or "http://fleet.test", transport=httpx.MockTransport(fake.handle)
        )

    monkeypatch.setattr(sys.modules["testfleet.cli.app"], "client_for", client_for)
    return fake


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["results", *args])


# ---------------------------------------------------------------- compare


def test_compare_prints_batch_sizes_down_and_devices_side_by_side(fleet: FakeCoordinator) -> None:
    done = invoke("compare", "--model", MODEL)

    assert done.exit_code == 0, done.output
    out = done.stdout
    assert "cpu · Intel Xeon · fp32" in out
    assert "cuda · NVIDIA H200 · fp16" in out
    assert out.count("items/s") == 2
    assert out.count("mean ms") == 2
    assert out.count("p99 ms") == 2
    lines = out.splitlines()
    # One line per batch size, each holding both devices' figures side by side.
    batch_1 = next(line for line in lines if line.strip("│┃ ").startswith("1 "))
    for figure in ("41.5", "24.1", "48.2", "812", "1.23", "2.46", "n=3"):
        assert figure in batch_1, figure
    batch_8 = next(line for line in lines if line.strip("│┃ ").startswith("8 "))
    assert "5,321" in batch_8
    batch_512 = next(line for line in lines if line.strip("│┃ ").startswith("512 "))
    assert "out of memory" in batch_512
    assert "5,069" in batch_512
    # Where the device ran out, and what it said.
    assert "batch 512 on cuda · NVIDIA H200 · fp16: out of memory: CUDA out of memory" in out
    assert fleet.params() == {"model": MODEL}


def test_runs_on_a_busy_machine_are_marked_and_say_why(fleet: FakeCoordinator) -> None:
    note = "the machine was busy as the run started: CPU 97 %; figures may be slower"
    busy = figures(1, "cpu", "Intel Xeon", "fp32", throughput=20.0, latency=50.0, load_note=note)
    fleet.compare = {**COMPARE, "rows": [busy]}
    fleet.history = {**HISTORY, "rows": [{**busy, "throughput_change_percent": None}]}
    for command in ("compare", "history"):
        done = invoke(command, "--model", MODEL)
        assert done.exit_code == 0, done.output
        row = next(line for line in done.stdout.splitlines() if "20.0" in line)
        assert "busy" in row, command
        assert f"busy bench-1-cpu on cpu · Intel Xeon: {note}" in done.stdout, command
    # Quiet runs carry no mark.
    fleet.compare = COMPARE
    assert "busy" not in invoke("compare", "--model", MODEL).stdout


def test_compare_sends_its_filters(fleet: FakeCoordinator) -> None:
    done = invoke(
        "compare",
        "--model",
        MODEL,
        "--precision",
        "fp16",
        "--hardware",
        "cuda",
        "--since",
        "2024-05-01",
    )

    assert done.exit_code == 0, done.output
    assert fleet.params() == {
        "model": MODEL,
        "precision": "fp16",
        "hardware": "cuda",
        "since": "2024-05-01T00:00:00Z",
    }


def test_compare_csv_has_a_header_and_one_line_per_row(fleet: FakeCoordinator) -> None:
    done = invoke("compare", "--model", MODEL, "--csv")

    assert done.exit_code == 0, done.output
    reader = csv.DictReader(io.StringIO(done.stdout, newline=""))
    assert tuple(reader.fieldnames or ()) == COMPARE_COLUMNS
    rows = list(reader)
    assert len(rows) == len(COMPARE["rows"])
    assert rows[1]["hardware"] == "cuda"
    assert float(rows[1]["throughput_items_per_second"]) == 812.25
    assert rows[1]["runs"] == "3"
    assert rows[1]["is_simulated"] == "false"
    oom = rows[-1]
    assert (oom["batch_size"], oom["error_class"]) == ("512", "out_of_memory")
    assert oom["throughput_items_per_second"] == ""
    assert oom["error_message"] == "CUDA out of memory. Tried to allocate 8.00 GiB"


def test_compare_json_is_the_api_document(fleet: FakeCoordinator) -> None:
    done = invoke("compare", "--model", MODEL, "--json")

    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == COMPARE


def test_json_and_csv_together_are_refused_before_asking(fleet: FakeCoordinator) -> None:
    for command in ("compare", "history"):
        done = invoke(command, "--model", MODEL, "--json", "--csv")

        assert done.exit_code == 2
        assert "--json and --csv cannot be used together" in done.stderr
        assert done.stdout == ""
    assert fleet.requests == []


def test_a_model_without_results_says_so_and_names_the_ones_with_results(
    fleet: FakeCoordinator,
) -> None:
    done = invoke("compare", "--model", "bert-base-uncasde")

    assert done.exit_code == 0, done.output
    assert "no benchmark results for model 'bert-base-uncasde'" in done.stdout
    assert f"models with results: {MODEL}, gpt2" in done.stdout
    assert "items/s" not in done.stdout


def test_a_model_without_results_keeps_csv_and_json_clean(fleet: FakeCoordinator) -> None:
    as_csv = invoke("compare", "--model", "nope", "--csv")
    as_json = invoke("compare", "--model", "nope", "--json")

    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [list(COMPARE_COLUMNS)]
    assert json.loads(as_json.stdout)["rows"] == []
    for done in (as_csv, as_json):
        assert done.exit_code == 0
        assert "no benchmark results for model 'nope'" in done.stderr


def test_filters_matching_nothing_are_told_apart_from_an_unknown_model(
    fleet: FakeCoordinator,
) -> None:
    fleet.compare = {**COMPARE, "rows": []}

    done = invoke("compare", "--model", MODEL, "--hardware", "rocm")

    assert done.exit_code == 0
    assert f"no benchmark results for model {MODEL!r} match these filters" in done.stdout


def test_a_refusal_from_the_coordinator_is_shown_with_its_field(fleet: FakeCoordinator) -> None:
    fleet.refuse = (
        422,
        {
            "error": {
                "code": "invalid_parameter",
                "message": "query.model: Field required",
                "details": [{"field": "query.model", "problem": "Field required"}],
            }
        },
    )

    done = invoke("compare", "--model", MODEL)

    assert done.exit_code == 2
    assert "query.model: Field required" in done.stderr


def test_an_unreachable_coordinator_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def client_for(coordinator: str | None) -> FleetClient:
        return FleetClient("http://fleet.test", transport=httpx.MockTransport(refuse))

    monkeypatch.setattr(sys.modules["testfleet.cli.app"], "client_for", client_for)

    done = invoke("models")

    assert done.exit_code == 2
    assert "cannot reach the coordinator" in done.stderr


def test_a_bad_since_is_refused_naming_the_option(fleet: FakeCoordinator) -> None:
    done = invoke("compare", "--model", MODEL, "--since", "last tuesday")

    assert done.exit_code == 2
    assert "--since 'last tuesday'" in done.stderr
    assert fleet.requests == []


def test_since_accepts_dates_times_and_ages() -> None:
    now = 1_714_564_800.0  # 2024-05-01T12:00:00Z
    assert parse_since("2024-05-01", now) == "2024-05-01T00:00:00Z"
    assert parse_since("2024-05-01T14:30:00+02:00", now) == "2024-05-01T12:30:00Z"
    assert parse_since("7d", now) == "2024-04-24T12:00:00Z"
    assert parse_since("90m", now) == "2024-05-01T10:30:00Z"
    assert parse_since("2w", now) == "2024-04-17T12:00:00Z"


# ---------------------------------------------------------------- history


def test_history_shows_one_row_per_run_with_the_change(fleet: FakeCoordinator) -> None:
    done = invoke("history", "--model", MODEL, "--batch-size", "8")

    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    runs = [line for line in lines if "2024-05-0" in line]
    assert len(runs) == 3
    for text in ("2024-05-01 12:00:00", "cuda · NVIDIA H200", "4,000"):
        assert text in runs[0], text
    for text in ("2024-05-02 12:00:00", "+25.0%", "-20.0%", "5,000"):
        assert text in runs[1], text
    assert "out of memory" in runs[2]
    assert fleet.params() == {"model": MODEL, "batch_size": "8", "limit": "1000"}


def test_history_csv_carries_the_change_columns(fleet: FakeCoordinator) -> None:
    done = invoke("history", "--model", MODEL, "--csv", "--precision", "fp16", "--limit", "5")

    assert done.exit_code == 0, done.output
    reader = csv.DictReader(io.StringIO(done.stdout, newline=""))
    assert tuple(reader.fieldnames or ()) == HISTORY_COLUMNS
    rows = list(reader)
    assert [r["recorded_time"] for r in rows] == [
        "2024-05-01T12:00:00Z",
        "2024-05-02T12:00:00Z",
        "2024-05-03T08:30:00Z",
    ]
    assert [r["throughput_change_percent"] for r in rows] == ["", "25.0", ""]
    assert rows[2]["error_class"] == "out_of_memory"
    assert fleet.params() == {"model": MODEL, "precision": "fp16", "limit": "5"}


def test_history_json_is_the_api_document(fleet: FakeCoordinator) -> None:
    done = invoke("history", "--model", MODEL, "--json")

    assert json.loads(done.stdout) == HISTORY


def test_history_of_a_model_without_results_says_so(fleet: FakeCoordinator) -> None:
    done = invoke("history", "--model", "t5-small")

    assert done.exit_code == 0
    assert "no benchmark results for model 't5-small'" in done.stdout


# ---------------------------------------------------------------- models


def test_models_lists_the_benchmarked_models(fleet: FakeCoordinator) -> None:
    table = invoke("models")
    as_json = invoke("models", "--json")

    assert table.exit_code == 0
    assert MODEL in table.stdout
    assert "gpt2" in table.stdout
    assert json.loads(as_json.stdout) == {"models": [MODEL, "gpt2"]}


def test_models_says_when_there_are_none(fleet: FakeCoordinator) -> None:
    fleet.models = []

    done = invoke("models")

    assert done.exit_code == 0
    assert "no benchmark results yet" in done.stdout


def test_the_csv_columns_are_exactly_the_api_rows_fields() -> None:
    """The CSV columns are listed in the order people read them, so they are
    written out; this keeps them the API's row fields, none missing or extra."""
    from testfleet.coordinator.api_models import CompareRow, HistoryRow

    assert sorted(COMPARE_COLUMNS) == sorted(CompareRow.model_fields)
    assert sorted(HISTORY_COLUMNS) == sorted(HistoryRow.model_fields)


# ---------------------------------------------------------------- backends (issue 15)


def backend_row(
    backend: str, batch_size: int, p50: float, throughput: float, **extra: Any
) -> dict[str, Any]:
    row = figures(batch_size, "cpu", "AMD EPYC", "fp32", throughput=throughput, latency=p50)
    return {**row, "variant": "seq=16", "backend": backend, **extra}


BACKENDS = {
    "model": MODEL,
    "rows": [
        backend_row("torch", 1, 2.5, 400.0),
        backend_row(
            "onnxruntime", 1, 1.25, 800.0, output_check="passed", output_max_abs_diff=7.2e-7
        ),
        {
            **backend_row("openvino", 1, 0.75, 1333.0, output_check="failed"),
            "hardware": "openvino",
            "output_max_abs_diff": 0.5,
        },
        backend_row("torch", 4, 6.0, 666.0),
    ],
}


def test_compare_shows_backends_side_by_side_with_their_output_check(
    fleet: FakeCoordinator,
) -> None:
    fleet.compare = BACKENDS
    done = invoke("compare", "--model", MODEL)

    assert done.exit_code == 0, done.output
    out = done.stdout
    assert "backends side by side" in out
    for column in ("backend", "device", "batch", "p50 ms", "items/s", "output check"):
        assert column in out, column
    lines = out.splitlines()

    def line_of(*words: str) -> str:
        return next(line for line in lines if all(word in line for word in words))

    assert "2.500" in line_of("torch", "cpu · AMD EPYC", "400.0", "reference")
    assert "1.250" in line_of("onnxruntime", "800.0", "passed 7.2e-07")
    assert "0.750" in line_of("openvino", "openvino · AMD EPYC", "1,333.0", "FAILED 0.5")
    # Torch first within a batch size, then the backends; batch sizes in order.
    order = [i for i, line in enumerate(lines) if "AMD EPYC" in line]
    assert [lines[i].split("│")[1].strip() for i in order] == [
        "torch",
        "onnxruntime",
        "openvino",
        "torch",
    ]


def test_compare_without_backends_keeps_the_hardware_table(fleet: FakeCoordinator) -> None:
    done = invoke("compare", "--model", MODEL)
    assert "backends side by side" not in done.stdout
    assert "mean ms" in done.stdout


def test_compare_csv_carries_backend_and_check(fleet: FakeCoordinator) -> None:
    fleet.compare = BACKENDS
    done = invoke("compare", "--model", MODEL, "--csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["backend"], r["output_check"]) for r in rows] == [
        ("torch", ""),
        ("onnxruntime", "passed"),
        ("openvino", "failed"),
        ("torch", ""),
    ]
