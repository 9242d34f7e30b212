"""Issue 15's backend seam with fakes: dispatch, refusals, the output check, the verdict.

No ONNX export or session here (tests/unit/worker/test_bench_backends_real.py
runs the real ones): fake backends and made-up arrays, so each rule is checked
on its own and fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from testfleet.domain.benchmark import (
    BatchSizeMeasurement,
    BenchmarkBackend,
    BenchmarkConfig,
    BenchmarkOutcome,
    OutputCheck,
    benchmark_rows,
)
from testfleet.domain.enums import ErrorClass, HardwareKind, ResultStatus
from testfleet.worker.benchmarking import runner
from testfleet.worker.benchmarking.backends import backend_for
from testfleet.worker.benchmarking.backends.base import Backend, BackendDescription, Feeds
from testfleet.worker.benchmarking.backends.openvino_backend import OpenVinoBackend
from testfleet.worker.benchmarking.backends.ort_backend import OrtBackend
from testfleet.worker.benchmarking.devices import backend_hardware
from testfleet.worker.benchmarking.errors import BenchmarkError
from testfleet.worker.benchmarking.outcome import RunnerReport, judge
from testfleet.worker.benchmarking.output_check import NOT_FINITE_DIFF, compare_outputs
from testfleet.worker.benchmarking.protocol import (
    BatchLine,
    FinalLine,
    RunnerRequest,
    SetupLine,
)
from testfleet.worker.executors.process_group import Ending


def config(**fields: Any) -> BenchmarkConfig:
    return BenchmarkConfig.model_validate({"model": "bert-base-uncased", **fields})


# ---------------------------------------------------------------- dispatch


def test_the_registry_builds_each_backend_and_refuses_one_it_lacks() -> None:
    assert isinstance(backend_for(BenchmarkBackend.ONNXRUNTIME), OrtBackend)
    assert isinstance(backend_for(BenchmarkBackend.OPENVINO), OpenVinoBackend)
    with pytest.raises(BenchmarkError) as caught:
        backend_for(BenchmarkBackend.BROWSER)
    assert caught.value.error_class is ErrorClass.INVALID_CONFIG
    assert "no browser benchmark backend" in caught.value.message
    assert "onnxruntime" in caught.value.message


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_runner_sends_a_non_torch_backend_down_its_own_path(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    seen: list[tuple[str, object]] = []

    def fake_run_backend(request: RunnerRequest, emit: Any, sweep: Any) -> None:
        seen.append((request.config.backend.value, sweep))

    import testfleet.worker.benchmarking.backend_run as backend_run

    monkeypatch.setattr(backend_run, "run_backend", fake_run_backend)
    request = RunnerRequest(task_id="t", config=config(backend=backend), device=HardwareKind.CPU)
    runner.run(request, lambda line: None)
    assert seen == [(backend, runner.sweep_batch_sizes)]


def test_an_unknown_model_is_refused_before_any_backend() -> None:
    request = RunnerRequest(
        task_id="t", config=config(model="nope", backend="onnxruntime"), device=HardwareKind.CPU
    )
    with pytest.raises(BenchmarkError, match="unknown model 'nope'"):
        runner.run(request, lambda line: None)


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({}, None),
        ({"backend": "onnxruntime"}, HardwareKind.CPU),
        ({"backend": "onnxruntime", "provider": "CUDAExecutionProvider"}, HardwareKind.CUDA),
        ({"backend": "onnxruntime", "provider": "ROCMExecutionProvider"}, HardwareKind.ROCM),
        ({"backend": "openvino"}, HardwareKind.OPENVINO),
        ({"backend": "openvino", "backend_device": "GPU"}, HardwareKind.OPENVINO),
        ({"backend": "browser"}, HardwareKind.CPU),
        ({"backend": "browser", "backend_device": "webgpu"}, HardwareKind.WEBGPU),
    ],
)
def test_the_hardware_a_backend_run_is_recorded_under(
    fields: dict[str, Any], kind: HardwareKind | None
) -> None:
    assert backend_hardware(config(**fields)) is kind


# ---------------------------------------------------------------- ONNX Runtime refusals


def ort(*providers: str) -> OrtBackend:
    return OrtBackend(providers=lambda: list(providers))


def test_ort_refuses_a_provider_it_does_not_have_naming_the_ones_it_has() -> None:
    backend = ort("CPUExecutionProvider", "AzureExecutionProvider")
    with pytest.raises(BenchmarkError) as caught:
        backend.check(config(backend="onnxruntime", provider="CUDAExecutionProvider"))
    assert caught.value.error_class is ErrorClass.INVALID_CONFIG
    message = caught.value.message
    assert "config.provider CUDAExecutionProvider is not available" in message
    assert "CPUExecutionProvider, AzureExecutionProvider" in message


@pytest.mark.parametrize(
    ("precision", "fragment"), [("fp16", "cannot run fp16"), ("bf16", "not bf16")]
)
def test_ort_refuses_precisions_the_cpu_provider_cannot_run(precision: str, fragment: str) -> None:
    with pytest.raises(BenchmarkError, match=fragment) as caught:
        ort("CPUExecutionProvider").check(config(backend="onnxruntime", precision=precision))
    assert caught.value.error_class is ErrorClass.INVALID_CONFIG


def test_ort_runs_fp16_on_a_gpu_provider_from_an_fp16_export() -> None:
    backend = ort("CUDAExecutionProvider", "CPUExecutionProvider")
    backend.check(config(backend="onnxruntime", provider="CUDAExecutionProvider", precision="fp16"))
    assert backend.input_dtype() == np.dtype(np.float16)
    plain = ort("CPUExecutionProvider")
    plain.check(config(backend="onnxruntime"))
    assert plain.input_dtype() == np.dtype(np.float32)


# ---------------------------------------------------------------- OpenVINO refusals


class FakeCore:
    def __init__(self, devices: list[str], capabilities: dict[str, list[str]]) -> None:
        self.available_devices = devices
        self._capabilities = capabilities

    def get_property(self, device: str, name: str) -> Any:
        assert name == "OPTIMIZATION_CAPABILITIES"
        return self._capabilities[device]


def openvino(*devices: str, capabilities: list[str] | None = None) -> OpenVinoBackend:
    caps = capabilities if capabilities is not None else ["FP32", "INT8", "EXPORT_IMPORT"]
    return OpenVinoBackend(core=FakeCore(list(devices), {d: caps for d in devices}))


@pytest.mark.parametrize("device", ["GPU", "NPU", "GPU.1", "AUTO:GPU,CPU", "HETERO:NPU"])
def test_openvino_refuses_a_device_it_does_not_list_naming_the_ones_it_has(device: str) -> None:
    with pytest.raises(BenchmarkError) as caught:
        openvino("CPU").check(config(backend="openvino", backend_device=device))
    assert caught.value.error_class is ErrorClass.INVALID_CONFIG
    assert f"config.backend_device {device!r} is not a device" in caught.value.message
    assert "(it has CPU)" in caught.value.message


@pytest.mark.parametrize("device", ["CPU", "GPU.1", "AUTO:GPU,CPU", "GPU"])
def test_openvino_accepts_listed_devices(device: str) -> None:
    openvino("CPU", "GPU.0", "GPU.1").check(config(backend="openvino", backend_device=device))


def test_openvino_refuses_a_precision_the_device_cannot_run() -> None:
    with pytest.raises(BenchmarkError, match=r"CPU cannot run fp16 \(its capabilities: FP32"):
        openvino("CPU").check(config(backend="openvino", precision="fp16"))
    openvino("CPU", capabilities=["FP32", "FP16"]).check(
        config(backend="openvino", precision="fp16")
    )
    with pytest.raises(BenchmarkError, match="not int8"):
        openvino("CPU").check(config(backend="openvino", precision="int8"))


# ---------------------------------------------------------------- the output check


def test_matching_outputs_pass_with_their_largest_difference() -> None:
    reference = [np.array([[0.5, -0.25], [10.0, 100.0]], dtype=np.float32)]
    outputs = [reference[0] + np.array([[1e-4, 0.0], [0.0, 0.05]], dtype=np.float32)]
    check, problem = compare_outputs(reference, outputs, tolerance=1e-3, batch_size=2)
    assert problem is None
    assert check.passed
    # 0.05 off at 100 is 5e-4 of it: within 1e-3, scaled; the absolute figure is kept.
    assert check.max_abs_diff == pytest.approx(0.05, rel=1e-3)
    assert check.max_rel_diff == pytest.approx(5e-4, rel=1e-3)
    assert (check.outputs_compared, check.batch_size, check.reference) == (1, 2, "torch")


def test_a_difference_beyond_the_tolerance_fails_and_says_by_how_much() -> None:
    reference = [np.zeros((2, 3), dtype=np.float32)]
    outputs = [np.full((2, 3), 2e-3, dtype=np.float32)]
    check, problem = compare_outputs(reference, outputs, tolerance=1e-3)
    assert not check.passed
    assert problem is not None
    assert "> output_tolerance 0.001" in problem
    # The tiniest tolerance fails even a real backend's rounding.
    tiny, _ = compare_outputs(reference, [reference[0] + 1e-7], tolerance=1e-12)
    assert not tiny.passed


@pytest.mark.parametrize(
    ("outputs", "fragment"),
    [
        ([np.zeros((2, 4))], "shape (2, 4), torch's is (2, 3)"),
        ([np.zeros((2, 3)), np.zeros((2, 3))], "gave 2 output(s), torch 1"),
        ([np.array([[0.0, np.nan, 0.0], [0.0, 0.0, np.inf]])], "2 value(s) not finite"),
    ],
)
def test_wrong_shapes_counts_and_non_finite_values_fail_outright(
    outputs: list[Any], fragment: str
) -> None:
    check, problem = compare_outputs([np.zeros((2, 3))], outputs, tolerance=1.0)
    assert not check.passed
    assert check.max_abs_diff == NOT_FINITE_DIFF
    assert problem is not None
    assert fragment in problem
    # Still a valid (storable) check: JSON has no infinity.
    OutputCheck.model_validate(check.model_dump(mode="json"))


# ---------------------------------------------------------------- a fake backend end to end


class CorruptingBackend(Backend):
    """Runs a fixed function of its inputs, optionally off by ``error``."""

    kind = BenchmarkBackend.ONNXRUNTIME

    def __init__(self, error: float = 0.0) -> None:
        self.error = error
        self.steps = 0

    def check(self, config: BenchmarkConfig) -> None:
        return None

    def load(self, exported: Any, config: BenchmarkConfig) -> None:
        return None

    def describe(self) -> BackendDescription:
        return BackendDescription("fake:cpu", "Fake CPU", "none")

    def run(self, inputs: Feeds) -> list[Any]:
        self.steps += 1
        return [np.asarray(inputs["x"], dtype=np.float32) * 2 + self.error]


@pytest.mark.parametrize(("error", "passed"), [(0.0, True), (0.5, False)])
def test_a_corrupted_backend_output_is_caught(error: float, passed: bool) -> None:
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    reference = [x * 2]
    backend = CorruptingBackend(error)
    check, _ = compare_outputs(reference, backend.run({"x": x}), tolerance=1e-3)
    assert check.passed is passed


def test_the_timed_step_defaults_to_run_and_the_backend_may_time_itself() -> None:
    backend = CorruptingBackend()
    step: Callable[[], object] = backend.prepare({"x": np.ones(2)})
    step()
    step()
    assert backend.steps == 2
    assert backend.time_steps({"x": np.ones(2)}, warmup=1, iterations=2) is None
    backend.synchronize()
    backend.close()


# ---------------------------------------------------------------- the parent's verdict


def measured(size: int) -> BatchLine:
    return BatchLine(
        batch_size=size,
        measurement=BatchSizeMeasurement(
            latency_ms=1.0,
            latency_p50_ms=1.0,
            latency_p90_ms=1.0,
            latency_p99_ms=1.0,
            throughput_items_per_second=size * 1000.0,
            memory_mb=10.0,
            iterations=3,
        ),
    )


def backend_verdict(check: OutputCheck | None, message: str | None = None) -> Any:
    report = RunnerReport()
    report.add(
        SetupLine(
            model_source="config",
            device="onnxruntime:CPUExecutionProvider",
            device_name="Test CPU",
            planned_batch_sizes=[1, 2],
            output_check=check,
            output_check_message=message,
        )
    )
    report.add(measured(1))
    report.add(measured(2))
    report.add(FinalLine(stop_reason="completed"))
    return judge(
        config=config(backend="onnxruntime", batch_sizes=[1, 2]),
        hardware=HardwareKind.CPU,
        report=report,
        ending=Ending.EXITED,
        returncode=0,
        timeout_seconds=30,
        metrics_interval_seconds=0.2,
    )


def test_a_passed_check_completes_and_the_outcome_carries_backend_and_check() -> None:
    check = OutputCheck(max_abs_diff=1e-6, tolerance=1e-3, passed=True, outputs_compared=1)
    v = backend_verdict(check)
    assert v.status is ResultStatus.COMPLETED
    outcome = BenchmarkOutcome.model_validate(v.results)
    assert outcome.backend is BenchmarkBackend.ONNXRUNTIME
    assert outcome.output_check == check
    assert outcome.device == "onnxruntime:CPUExecutionProvider"


def test_a_failed_check_is_output_mismatch_with_the_figures_kept() -> None:
    check = OutputCheck(max_abs_diff=0.5, tolerance=1e-3, passed=False, outputs_compared=1)
    v = backend_verdict(check, "outputs differ from torch's: largest difference 0.5")
    assert v.status is ResultStatus.FAILED
    assert v.error == (
        ErrorClass.OUTPUT_MISMATCH,
        "onnxruntime: outputs differ from torch's: largest difference 0.5",
    )
    outcome = BenchmarkOutcome.model_validate(v.results)
    assert sorted(outcome.batch_sizes) == ["1", "2"]
    rows = benchmark_rows(
        attempt_id=1,
        task_id="t",
        worker_id="w",
        recorded_time=0.0,
        results=v.results,
        is_simulated=False,
    )
    assert [(r.backend, r.output_check, r.latency_ms) for r in rows] == [
        ("onnxruntime", "failed", 1.0),
        ("onnxruntime", "failed", 1.0),
    ]
