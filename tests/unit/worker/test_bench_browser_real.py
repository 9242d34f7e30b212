"""Real browser benchmarks: BenchmarkExecutor -> runner child -> ONNX export ->
onnxruntime-web in Debian's Chromium (wasm, and WebGPU on Chromium's software
adapter, headless), with the output check against torch.

Two of the five models (BERT and GPT-2) on wasm, BERT on WebGPU. Never
skipped: Chromium and onnxruntime-web (browser/, npm) are installed by ``make
test``. No test asserts on wall-clock speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from test_bench_real import COMMON, TINY, context_for, executor

from testfleet.domain.benchmark import BenchmarkBackend, BenchmarkOutcome
from testfleet.domain.enums import HardwareKind, ResultStatus
from testfleet.domain.result import TaskResult, decode_logs
from testfleet.domain.task import TaskSpec

#: Three runs, each a runner child that exports and starts a Chromium, one after
#: another: minutes on a loaded two-core machine (the default limit is 120 s).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RUNS: dict[str, dict[str, Any]] = {
    "bert-wasm": {"model": "bert-base-uncased", "backend_device": "wasm", "batch_sizes": [1, 2]},
    "gpt2-wasm": {"model": "gpt2", "backend_device": "wasm", "batch_sizes": [2]},
    "bert-webgpu": {"model": "bert-base-uncased", "backend_device": "webgpu", "batch_sizes": [1]},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TaskResult]]:
    base = tmp_path_factory.mktemp("browser")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")

        async def run_all() -> dict[str, TaskResult]:
            shared = executor()
            ran: dict[str, TaskResult] = {}
            # One at a time: each run starts a Chromium, and the machine has two cores.
            for index, (name, config) in enumerate(RUNS.items()):
                full = {**COMMON, "backend": "browser", **config}
                full.setdefault("config_overrides", TINY[config["model"]])
                task = TaskSpec.model_validate(
                    {
                        "task_id": f"browser-{name}",
                        "type": "benchmark",
                        "timeout_seconds": 300,
                        "config": full,
                    }
                )
                ran[name] = await shared.run(task, context_for(base / name, index))
            return ran

        yield asyncio.run(run_all())


@pytest.mark.parametrize("name", list(RUNS))
def test_the_model_runs_in_chromium_and_agrees_with_torch(
    results: dict[str, TaskResult], name: str
) -> None:
    result = results[name]
    assert result.status is ResultStatus.COMPLETED, (result.error, decode_logs(result.logs))
    assert result.simulation_status.is_simulated is False
    outcome = BenchmarkOutcome.model_validate(result.results)
    device = RUNS[name]["backend_device"]
    assert outcome.backend is BenchmarkBackend.BROWSER
    assert outcome.device == f"browser:{device}"
    assert outcome.hardware is (HardwareKind.WEBGPU if device == "webgpu" else HardwareKind.CPU)
    assert sorted(int(s) for s in outcome.batch_sizes) == RUNS[name]["batch_sizes"]
    for measured in outcome.batch_sizes.values():
        assert measured.iterations == COMMON["iterations"]
        assert measured.latency_p99_ms >= measured.latency_p50_ms > 0
    check = outcome.output_check
    assert check is not None
    assert check.passed, check
    conditions = outcome.conditions
    assert conditions["onnxruntime_web_version"] == "1.31.1"
    assert conditions["backend_device"] == device
    assert conditions["browser_version"].split(".")[0].isdigit()
    assert conditions["timing"].startswith("performance.now()")
    assert conditions["wasm_tiering"] == (
        "hot functions optimised synchronously (--js-flags=--wasm-sync-tier-up)"
    )
    if device == "webgpu":
        assert "swiftshader" in conditions["webgpu_adapter"]
    else:
        assert conditions["cross_origin_isolated"] is True
        assert conditions["wasm_threads"] == COMMON["threads"]
