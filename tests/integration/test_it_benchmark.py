"""Real model benchmarks end to end: coordinator, worker, torch child, DuckDB rows.

Tiny configurations (a layer or two) keep each run to seconds on the CPU; the
code path is the one a GPU box runs. Requires torch and transformers (the
``bench`` extra, which `make test` installs).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT

from testfleet.worker.executors.registry import benchmarks_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not benchmarks_available(), reason="needs the bench extra (torch, transformers)"
    ),
]

TINY_BERT = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
             "intermediate_size": 64}  # fmt: skip
TINY_GPT2 = {"n_layer": 1, "n_embd": 32, "n_head": 2}


def benchmark(task_id: str, model: str, overrides: dict, **config: object) -> dict:
    document = {
        "model": model,
        "iterations": 5,
        "warmup": 1,
        "sequence_length": 16,
        "config_overrides": overrides,
    }
    document.update(config)
    return {"task_id": task_id, "type": "benchmark", "config": document, "timeout_seconds": 300}


@pytest.mark.timeout(300)
def test_benchmarks_run_on_the_cpu_and_land_in_duckdb(fleet, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    fleet.start_worker("bench-cpu", slots=2)
    worker = fleet.client.workers()[0]
    assert "benchmark" in worker["task_types"]

    tasks = [
        benchmark("bert-cpu", "bert-base-uncased", TINY_BERT, batch_sizes=[1, 2, 4]),
        benchmark("gpt2-auto", "gpt2", TINY_GPT2, batch_sizes="auto", max_batch_size=4),
        benchmark("no-such-model", "no-such-model", {}),
        # The design document's own example, as written (docs/formats.md, tasks): this
        # fleet has no CUDA, so it waits and says why.
        {
            "task_id": "benchmark-bert-cuda-001",
            "type": "benchmark",
            "priority": 1,
            "requirements": {"hardware": ["cuda"], "min_memory_gb": 8, "min_cuda_compute": 7.5},
            "config": {
                "model": "bert-base-uncased",
                "batch_sizes": [1, 2, 4, 8, 16],
                "precision": "fp16",
                "iterations": 100,
            },
            "timeout_seconds": 1800,
            "retry_policy": {"max_retries": 3, "retry_delay_seconds": 60},
        },
    ]
    fleet.client.submit(tasks)
    finished = fleet.wait_terminal(["bert-cpu", "gpt2-auto", "no-such-model"], timeout=240)

    assert finished["bert-cpu"]["status"] == "completed"
    assert finished["gpt2-auto"]["status"] == "completed"
    unknown = fleet.task("no-such-model")
    assert unknown["task"]["status"] == "failed"
    assert unknown["task"]["error"]["error_class"] == "invalid_config"
    assert "bert-base-uncased" in unknown["task"]["error"]["message"]  # lists the known ones

    cuda = fleet.task("benchmark-bert-cuda-001")["task"]
    assert cuda["status"] == "queued"
    assert "cuda" in cuda["unschedulable_reason"]

    # The result document, as the API serves it (docs/formats.md, results, plus the conditions).
    bert = fleet.task("bert-cpu")["result"]
    assert bert["simulation_status"]["is_simulated"] is False
    outcome = bert["results"]
    assert outcome["hardware"] == "cpu"
    assert outcome["precision"] == "fp32"
    assert sorted(outcome["batch_sizes"], key=int) == ["1", "2", "4"]
    for figures in outcome["batch_sizes"].values():
        assert figures["throughput_items_per_second"] > 0
        assert figures["latency_p99_ms"] >= figures["latency_p50_ms"] > 0
    for key in ("torch_version", "transformers_version"):
        assert outcome["conditions"][key]
    assert "cpu_percent" in bert["hardware_metrics"]

    auto = fleet.task("gpt2-auto")["result"]["results"]
    assert auto["auto_batch_size"] is True
    assert auto["optimal_batch_size"] in {int(size) for size in auto["batch_sizes"]}
    assert set(auto["batch_sizes"]) <= {"1", "2", "4"}

    # The worker goes on taking tasks after a failed benchmark.
    fleet.client.submit([{"task_id": "after", "type": "simulated"}])
    assert fleet.wait_terminal(["after"])["after"]["status"] == "completed"

    # People compare through the CLI, as CSV here.
    env = fleet.env()  # its address, CA and admin token
    compared = subprocess.run(
        [sys.executable, "-m", "testfleet", "results", "compare", "--model",
         "bert-base-uncased", "--csv"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(compared.stdout)))
    assert sorted(int(r["batch_size"]) for r in rows) == [1, 2, 4]
    assert {r["hardware"] for r in rows} == {"cpu"}
    history = subprocess.run(
        [sys.executable, "-m", "testfleet", "results", "history", "--model", "gpt2", "--json"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    assert len(json.loads(history.stdout)["rows"]) == len(auto["batch_sizes"])

    fleet.stop(fleet.processes["bench-cpu"])
    fleet.stop(fleet.processes["coordinator"])
    with fleet.open_store() as store:
        rows_by_task = {t: store.get_benchmark_rows(t) for t in ("bert-cpu", "gpt2-auto")}
        assert [r.batch_size for r in rows_by_task["bert-cpu"]] == [1, 2, 4]
        for row in rows_by_task["bert-cpu"] + rows_by_task["gpt2-auto"]:
            assert row.is_simulated is False
            assert row.hardware == "cpu"
            assert row.throughput_items_per_second is not None
            assert row.throughput_items_per_second > 0
            assert row.latency_p99_ms is not None
            assert row.latency_p50_ms is not None
            assert row.latency_p99_ms >= row.latency_p50_ms
            assert row.memory_mb is not None
            assert row.memory_mb > 0
        # The failed benchmark measured nothing, so it stored no rows.
        assert store.get_benchmark_rows("no-such-model") == []
