"""Real ONNX Runtime and OpenVINO benchmarks: BenchmarkExecutor -> runner child ->
ONNX export -> the backend on the CPU, with the output check against torch.

Every known model runs on one of the two backends (BERT and GPT-2 on both), a
deliberately tiny tolerance fails the check with ``output_mismatch`` (figures
kept), and the refusals a worker finds (a provider or device it lacks, a
precision the CPU provider cannot run) are ``invalid_config`` naming what it
has. Models are TINY, so each child spends its seconds importing and
exporting; the runs share one module fixture, two children at a time.

Never skipped: the bench extra (installed by ``make``) holds torch,
transformers, onnx, onnxscript, onnxruntime and openvino. No test asserts on
wall-clock speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from test_bench_real import COMMON, TINY, context_for, executor

from testfleet.domain.benchmark import BenchmarkBackend, BenchmarkOutcome
from testfleet.domain.enums import ErrorClass, HardwareKind, ResultStatus
from testfleet.domain.result import TaskResult, decode_logs
from testfleet.domain.task import TaskSpec

pytestmark = pytest.mark.slow

#: name -> task config (COMMON and the model's TINY overrides added).
RUNS: dict[str, dict[str, Any]] = {
    "bert-ort": {"model": "bert-base-uncased", "backend": "onnxruntime", "batch_sizes": [1, 2]},
    "bert-ov": {"model": "bert-base-uncased", "backend": "openvino", "batch_sizes": [1, 2]},
    "gpt2-ort": {"model": "gpt2", "backend": "onnxruntime", "batch_sizes": [2]},
    "gpt2-ov": {"model": "gpt2", "backend": "openvino", "batch_sizes": [2]},
    "t5-ort": {"model": "t5-small", "backend": "onnxruntime", "batch_sizes": [2]},
    "vit-ov": {"model": "vit-base-patch16-224", "backend": "openvino", "batch_sizes": [1]},
    "whisper-ort": {
        "model": "whisper-tiny",
        "backend": "onnxruntime",
        "batch_sizes": [1],
        "sequence_length": 8,
    },
    "mismatch": {
        "model": "gpt2",
        "backend": "onnxruntime",
        "batch_sizes": [1],
        "output_tolerance": 1e-12,
    },
    "no-provider": {
        "model": "bert-base-uncased",
        "backend": "onnxruntime",
        "provider": "CUDAExecutionProvider",
    },
    "no-device": {"model": "bert-base-uncased", "backend": "openvino", "backend_device": "NPU"},
    "ort-fp16": {"model": "bert-base-uncased", "backend": "onnxruntime", "precision": "fp16"},
}


def task_for(name: str, config: dict[str, Any]) -> TaskSpec:
    full = {**COMMON, **config}
    full.setdefault("config_overrides", TINY[config["model"]])
    return TaskSpec.model_validate(
        {"task_id": f"backend-{name}", "type": "benchmark", "timeout_seconds": 240, "config": full}
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TaskResult]]:
    base = tmp_path_factory.mktemp("backends")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")

        async def run_all() -> dict[str, TaskResult]:
            gate = asyncio.Semaphore(2)
            shared = executor()

            async def one(index: int, name: str) -> tuple[str, TaskResult]:
                async with gate:
                    task = task_for(name, RUNS[name])
                    return name, await shared.run(task, context_for(base / name, index))

            return dict(await asyncio.gather(*(one(i, n) for i, n in enumerate(RUNS))))

        ran = asyncio.run(run_all())
        # The exports lived in a temporary directory of each attempt: all gone.
        ran_exports = sorted(str(p) for p in base.rglob("onnx-export-*"))
        assert ran_exports == [], ran_exports
        yield ran


def outcome_of(result: TaskResult) -> BenchmarkOutcome:
    return BenchmarkOutcome.model_validate(result.results)


@pytest.mark.parametrize(
    ("name", "backend", "hardware", "sizes"),
    [
        ("bert-ort", BenchmarkBackend.ONNXRUNTIME, HardwareKind.CPU, [1, 2]),
        ("bert-ov", BenchmarkBackend.OPENVINO, HardwareKind.OPENVINO, [1, 2]),
        ("gpt2-ort", BenchmarkBackend.ONNXRUNTIME, HardwareKind.CPU, [2]),
        ("gpt2-ov", BenchmarkBackend.OPENVINO, HardwareKind.OPENVINO, [2]),
        ("t5-ort", BenchmarkBackend.ONNXRUNTIME, HardwareKind.CPU, [2]),
        ("vit-ov", BenchmarkBackend.OPENVINO, HardwareKind.OPENVINO, [1]),
        ("whisper-ort", BenchmarkBackend.ONNXRUNTIME, HardwareKind.CPU, [1]),
    ],
)
def test_each_model_runs_on_a_backend_and_agrees_with_torch(
    results: dict[str, TaskResult],
    name: str,
    backend: BenchmarkBackend,
    hardware: HardwareKind,
    sizes: list[int],
) -> None:
    result = results[name]
    assert result.status is ResultStatus.COMPLETED, (result.error, decode_logs(result.logs))
    assert result.simulation_status.is_simulated is False
    outcome = outcome_of(result)
    assert outcome.backend is backend
    assert outcome.hardware is hardware
    assert outcome.device.startswith(f"{backend.value}:")
    assert sorted(int(size) for size in outcome.batch_sizes) == sizes
    for measured in outcome.batch_sizes.values():
        assert measured.throughput_items_per_second > 0
        assert measured.latency_p99_ms >= measured.latency_p90_ms >= measured.latency_p50_ms > 0
        assert measured.memory_mb > 0
        assert measured.iterations == COMMON["iterations"]
    check = outcome.output_check
    assert check is not None
    assert check.passed, check
    assert check.max_abs_diff <= 1e-3
    assert check.outputs_compared == 1
    conditions = outcome.conditions
    for key in ("backend_version", "backend_precision", "onnx_opset", "torch_version"):
        assert conditions.get(key) is not None, key
    assert conditions["backend"] == backend.value
    if backend is BenchmarkBackend.OPENVINO:
        assert conditions["openvino_device_full_name"]
        # fp32 asked for, fp32 run: never the CPU plugin's bf16 default.
        assert conditions["inference_precision_hint"] == "f32"
        assert conditions["backend_threads"] == COMMON["threads"]
    else:
        assert conditions["provider"] == "CPUExecutionProvider"
        assert conditions["backend_threads"] == COMMON["threads"]


def test_a_tiny_tolerance_fails_the_check_and_keeps_the_figures(
    results: dict[str, TaskResult],
) -> None:
    result = results["mismatch"]
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.OUTPUT_MISMATCH
    assert "output_tolerance 1e-12" in result.error.message
    outcome = outcome_of(result)
    assert list(outcome.batch_sizes) == ["1"]
    assert outcome.output_check is not None
    assert not outcome.output_check.passed


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("no-provider", ["CUDAExecutionProvider is not available", "CPUExecutionProvider"]),
        ("no-device", ["config.backend_device 'NPU' is not a device", "(it has CPU"]),
        ("ort-fp16", ["cannot run fp16"]),
    ],
)
def test_what_the_worker_lacks_is_invalid_config_naming_what_it_has(
    results: dict[str, TaskResult], name: str, fragments: list[str]
) -> None:
    result = results[name]
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG, result.error
    for fragment in fragments:
        assert fragment in result.error.message
    assert result.results == {}
