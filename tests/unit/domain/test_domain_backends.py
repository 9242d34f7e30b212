"""Issue 15's benchmark backends in the domain: config fields, the outcome's
output check, and the rows that carry both."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from testfleet.domain.benchmark import (
    DEFAULT_ONNX_PROVIDER,
    BenchmarkBackend,
    BenchmarkConfig,
    BenchmarkOutcome,
    OutputCheck,
    OutputCheckStatus,
    benchmark_rows,
)
from testfleet.domain.enums import ErrorClass
from testfleet.domain.task import TaskSpec


def config(**fields: Any) -> BenchmarkConfig:
    return BenchmarkConfig.model_validate({"model": "bert-base-uncased", **fields})


def test_old_configs_are_unchanged_torch_with_checks_on() -> None:
    plain = config()
    assert plain.backend is BenchmarkBackend.TORCH
    assert plain.backend_device is None
    assert plain.provider is None
    assert plain.check_outputs is True
    assert plain.output_tolerance == 1e-3
    assert plain.resolved_backend_device is None


def test_defaults_of_each_backend() -> None:
    assert config(backend="onnxruntime").onnx_provider == DEFAULT_ONNX_PROVIDER
    assert config(backend="onnxruntime", provider="CUDAExecutionProvider").onnx_provider == (
        "CUDAExecutionProvider"
    )
    assert config(backend="openvino").resolved_backend_device == "CPU"
    assert config(backend="openvino", backend_device="GPU.0").resolved_backend_device == "GPU.0"
    assert config(backend="browser").resolved_backend_device == "wasm"
    assert config(backend="browser", backend_device="webgpu").resolved_backend_device == "webgpu"


@pytest.mark.parametrize(
    ("fields", "named", "fix"),
    [
        ({"backend": "tensorflow"}, "backend", "torch"),
        ({"backend": "torch", "provider": "CPUExecutionProvider"}, "config.provider", "remove"),
        ({"backend": "openvino", "provider": "CPUExecutionProvider"}, "config.provider", "remove"),
        ({"backend": "onnxruntime", "provider": "CPU"}, "provider", "ExecutionProvider"),
        ({"backend": "onnxruntime", "provider": ""}, "provider", "at least 1"),
        ({"backend": "torch", "backend_device": "CPU"}, "config.backend_device", "remove"),
        ({"backend": "onnxruntime", "backend_device": "CPU"}, "config.backend_device", "remove"),
        ({"backend": "openvino", "backend_device": "C P U"}, "backend_device", "pattern"),
        ({"backend": "openvino", "backend_device": "X" * 65}, "backend_device", "64"),
        (
            {"backend": "browser", "backend_device": "CPU"},
            "config.backend_device",
            "wasm or webgpu",
        ),
        ({"check_outputs": "maybe"}, "check_outputs", "boolean"),
        ({"output_tolerance": 0}, "output_tolerance", "greater than 0"),
        ({"output_tolerance": -1e-3}, "output_tolerance", "greater than 0"),
        ({"output_tolerance": 2}, "output_tolerance", "less than or equal to 1"),
        ({"output_tolerance": float("nan")}, "output_tolerance", "finite"),
        ({"output_tolerance": float("inf")}, "output_tolerance", "finite"),
    ],
)
def test_bad_backend_fields_name_the_field_and_the_fix(
    fields: dict[str, Any], named: str, fix: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        config(**fields)
    text = str(caught.value)
    assert named in text
    assert fix in text


def test_a_backend_error_reaches_the_submitter_through_the_task() -> None:
    document: dict[str, Any] = {
        "task_id": "b",
        "type": "benchmark",
        "config": {"model": "gpt2", "backend": "torch", "provider": "CPUExecutionProvider"},
    }
    with pytest.raises(ValidationError, match=r"config\.provider: only for backend onnxruntime"):
        TaskSpec.model_validate(document)


def test_output_mismatch_is_an_error_class() -> None:
    assert ErrorClass("output_mismatch") is ErrorClass.OUTPUT_MISMATCH


def outcome(**extra: Any) -> dict[str, Any]:
    return {
        "model": "bert-base-uncased",
        "model_source": "config",
        "hardware": "cpu",
        "device": "cpu",
        "device_name": "Xeon",
        "precision": "fp32",
        "auto_batch_size": False,
        "batch_sizes": {
            "1": {
                "latency_ms": 10.0,
                "latency_p50_ms": 9.0,
                "latency_p90_ms": 11.0,
                "latency_p99_ms": 12.0,
                "throughput_items_per_second": 100.0,
                "memory_mb": 500.0,
                "iterations": 5,
            }
        },
        "conditions": {"sequence_length": 16},
        **extra,
    }


def rows(document: dict[str, Any]) -> list[Any]:
    return benchmark_rows(
        attempt_id=1,
        task_id="t",
        worker_id="w",
        recorded_time=0.0,
        results=document,
        is_simulated=False,
    )


def test_rows_carry_backend_and_output_check() -> None:
    check = OutputCheck(max_abs_diff=2e-6, tolerance=1e-3, passed=True, outputs_compared=1)
    [row] = rows(outcome(backend="onnxruntime", output_check=check.model_dump()))
    assert row.backend == "onnxruntime"
    assert row.output_check == OutputCheckStatus.PASSED.value
    assert row.output_max_abs_diff == 2e-6
    failed = OutputCheck(max_abs_diff=0.5, tolerance=1e-3, passed=False, outputs_compared=1)
    [row] = rows(outcome(backend="openvino", output_check=failed.model_dump()))
    assert (row.backend, row.output_check) == ("openvino", "failed")


def test_an_outcome_from_before_backends_is_torchs_and_unchecked() -> None:
    parsed = BenchmarkOutcome.model_validate(outcome())
    assert parsed.backend is BenchmarkBackend.TORCH
    assert parsed.output_check is None
    [row] = rows(outcome())
    assert (row.backend, row.output_check, row.output_max_abs_diff) == ("torch", None, None)


def test_output_check_refuses_nonsense() -> None:
    with pytest.raises(ValidationError, match="max_abs_diff"):
        OutputCheck(max_abs_diff=-1.0, tolerance=1e-3, passed=True, outputs_compared=1)
    with pytest.raises(ValidationError, match="reference"):
        OutputCheck.model_validate(
            {
                "reference": "onnx",
                "max_abs_diff": 0,
                "tolerance": 1,
                "passed": True,
                "outputs_compared": 1,
            }
        )
