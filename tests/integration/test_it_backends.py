"""Issue 15's backends end to end: a real fleet runs ONNX Runtime and OpenVINO
benchmarks of two models beside torch's, the rows land in DuckDB with their
backend and a passed output check, and ``testfleet results compare`` shows the
backends side by side.

Tiny configurations keep each run to seconds (most of it the ONNX export).
Never skipped: the bench extra (installed by ``make``) holds every backend.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = {
    "bert-base-uncased": {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                          "intermediate_size": 64},
    "gpt2": {"n_layer": 1, "n_embd": 32, "n_head": 2},
}  # fmt: skip
#: task id -> (model, backend)
RUNS = {
    "bert-torch": ("bert-base-uncased", "torch"),
    "bert-ort": ("bert-base-uncased", "onnxruntime"),
    "bert-ov": ("bert-base-uncased", "openvino"),
    "gpt2-ort": ("gpt2", "onnxruntime"),
    "gpt2-ov": ("gpt2", "openvino"),
}


def benchmark(task_id: str, model: str, backend: str) -> dict[str, object]:
    config = {
        "model": model,
        "backend": backend,
        "batch_sizes": [1, 2],
        "iterations": 5,
        "warmup": 1,
        "sequence_length": 16,
        "threads": 1,
        "config_overrides": TINY[model],
    }
    return {"task_id": task_id, "type": "benchmark", "config": config, "timeout_seconds": 300}


@pytest.mark.timeout(420)
def test_backends_run_land_in_duckdb_and_compare_side_by_side(fleet, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    fleet.start_worker("bench-backends", slots=2)
    fleet.client.submit([benchmark(task_id, *spec) for task_id, spec in RUNS.items()])
    finished = fleet.wait_terminal(list(RUNS), timeout=360)
    for task_id in RUNS:
        assert finished[task_id]["status"] == "completed", fleet.task(task_id)

    ov = fleet.task("bert-ov")["result"]["results"]
    assert ov["backend"] == "openvino"
    assert ov["device"] == "openvino:CPU"
    assert ov["output_check"]["passed"] is True
    assert ov["conditions"]["openvino_version"]

    env = fleet.env()  # its address, CA and admin token
    shown = subprocess.run(
        [sys.executable, "-m", "testfleet", "results", "compare", "--model",
         "bert-base-uncased"],
        capture_output=True, text=True, env={**env, "COLUMNS": "200"}, timeout=60, check=True,
    )  # fmt: skip
    assert "backends side by side" in shown.stdout
    for backend in ("torch", "onnxruntime", "openvino"):
        assert backend in shown.stdout
    assert shown.stdout.count("passed") >= 4  # two backends x two batch sizes
    compared = subprocess.run(
        [sys.executable, "-m", "testfleet", "results", "compare", "--model", "gpt2", "--csv"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(compared.stdout)))
    assert sorted((r["backend"], r["batch_size"], r["output_check"]) for r in rows) == [
        ("onnxruntime", "1", "passed"),
        ("onnxruntime", "2", "passed"),
        ("openvino", "1", "passed"),
        ("openvino", "2", "passed"),
    ]

    fleet.stop(fleet.processes["bench-backends"])
    fleet.stop(fleet.processes["coordinator"])
    with fleet.open_store() as store:
        for task_id, (model, backend) in RUNS.items():
            stored = store.get_benchmark_rows(task_id)
            assert [r.batch_size for r in stored] == [1, 2]
            for row in stored:
                assert (row.model, row.backend) == (model, backend)
                assert row.output_check == (None if backend == "torch" else "passed")
                assert row.throughput_items_per_second is not None
                assert row.throughput_items_per_second > 0
                assert row.is_simulated is False
