"""A benchmark that names a backend goes only to a worker whose detected
backends offer it (issue 15), and a task nobody can run says what is missing."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from sched_builders import caps, placed, task, view, worker

from testfleet.domain.backend_requirement import BackendRequirement
from testfleet.domain.benchmark import BenchmarkBackend
from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import (
    BackendInfo,
    BrowserInfo,
    OnnxRuntimeInfo,
    OpenVinoInfo,
    WasmInfo,
    WebGpuInfo,
    WorkerCapabilities,
)
from testfleet.domain.task import Requirements, TaskSpec
from testfleet.scheduling.matching import offered_hardware, unmet_requirement
from testfleet.scheduling.scheduler import schedule

ORT_CPU = OnnxRuntimeInfo(version="1.32.0", providers=["CPUExecutionProvider"])
OV_CPU = OpenVinoInfo(version="2026.4", devices=["CPU"])
OV_GPU = OpenVinoInfo(version="2026.4", devices=["CPU", "GPU.0"])
CHROMIUM = BrowserInfo(
    path="/usr/bin/chromium",
    version="156.0",
    wasm=WasmInfo(simd=True, threads=True),
    onnxruntime_web="1.31.1",
)
WITH_ADAPTER = CHROMIUM.model_copy(
    update={"webgpu": WebGpuInfo(adapter="google swiftshader", features=["subgroups"])}
)


def with_backends(**backends: Any) -> WorkerCapabilities:
    kinds = [HardwareKind.CPU]
    if backends.get("openvino") is not None:
        kinds.append(HardwareKind.OPENVINO)
    browser = backends.get("browser")
    if browser is not None and browser.webgpu.adapter is not None:
        kinds.append(HardwareKind.WEBGPU)
    return caps(hardware=kinds).model_copy(update={"backends": BackendInfo(**backends)})


def spec(requirements: dict[str, Any] | None = None, **config: Any) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "type": "benchmark",
            "config": {"model": "bert-base-uncased", **config},
            "requirements": requirements or {},
        }
    )


def needs(**config: Any) -> Requirements:
    return spec(**config).requirements


# --------------------------------------------------------------------------- the requirement


def test_the_config_sets_the_backend_requirement_with_its_defaults_written_out() -> None:
    assert needs().backend is None  # torch: placed by hardware, as before
    assert needs(backend="onnxruntime").backend == BackendRequirement(
        name=BenchmarkBackend.ONNXRUNTIME, provider="CPUExecutionProvider"
    )
    assert needs(backend="openvino").backend == BackendRequirement(
        name=BenchmarkBackend.OPENVINO, device="CPU"
    )
    assert needs(backend="browser").backend == BackendRequirement(
        name=BenchmarkBackend.BROWSER, device="wasm"
    )


def test_every_fallback_slice_gets_it_and_the_document_reads_back_the_same() -> None:
    task_spec = TaskSpec.model_validate(
        {
            "type": "benchmark",
            "config": {
                "model": "bert-base-uncased",
                "backend": "browser",
                "backend_device": "webgpu",
            },
            "fallbacks": [{"after_seconds": 60, "requirements": {"tags": {"pool": "b"}}}],
        }
    )
    wanted = BackendRequirement(name=BenchmarkBackend.BROWSER, device="webgpu")
    assert task_spec.requirements.backend == wanted
    assert task_spec.fallbacks[0].requirements.backend == wanted
    assert task_spec.fallbacks[0].requirements.tags == {"pool": "b"}
    again = TaskSpec.model_validate(task_spec.model_dump(mode="json"))
    assert again == task_spec


def test_different_devices_are_different_match_keys() -> None:
    wasm = needs(backend="browser", backend_device="wasm")
    webgpu = needs(backend="browser", backend_device="webgpu")
    assert wasm.key() != webgpu.key()
    assert needs(backend="browser").key() == wasm.key()  # the default, written out


def test_a_backend_requirement_that_contradicts_the_config_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"requirements\.backend is openvino on GPU but the "):
        spec({"backend": {"name": "openvino", "device": "GPU"}}, backend="openvino")
    with pytest.raises(ValidationError, match="no backend beyond torch"):
        spec({"backend": {"name": "browser", "device": "wasm"}})


# --------------------------------------------------------------------------- matching


def test_onnxruntime_needs_the_provider_asked_for() -> None:
    cpu = with_backends(onnxruntime=ORT_CPU)
    assert unmet_requirement(TaskType.BENCHMARK, needs(backend="onnxruntime"), cpu) is None
    cuda = needs(backend="onnxruntime", provider="CUDAExecutionProvider")
    assert unmet_requirement(TaskType.BENCHMARK, cuda, cpu) == (
        "backend: needs onnxruntime with CUDAExecutionProvider, worker has ONNX Runtime "
        "1.32.0 with [CPUExecutionProvider]"
    )
    assert unmet_requirement(TaskType.BENCHMARK, cuda, with_backends()) == (
        "backend: needs onnxruntime with CUDAExecutionProvider, worker has no ONNX Runtime"
    )


def test_openvino_needs_the_device_asked_for() -> None:
    gpu = needs(backend="openvino", backend_device="GPU")
    assert unmet_requirement(TaskType.BENCHMARK, gpu, with_backends(openvino=OV_GPU)) is None
    assert unmet_requirement(TaskType.BENCHMARK, gpu, with_backends(openvino=OV_CPU)) == (
        "backend: needs openvino on GPU, worker has OpenVINO 2026.4 on [CPU]"
    )


def test_the_browser_needs_onnxruntime_web_and_for_webgpu_an_adapter() -> None:
    wasm = needs(backend="browser")
    webgpu = needs(backend="browser", backend_device="webgpu")
    assert unmet_requirement(TaskType.BENCHMARK, wasm, with_backends(browser=CHROMIUM)) is None
    assert unmet_requirement(TaskType.BENCHMARK, webgpu, with_backends(browser=CHROMIUM)) == (
        "backend: needs browser on webgpu, worker has Chromium 156.0 with no WebGPU adapter"
    )
    assert (
        unmet_requirement(TaskType.BENCHMARK, webgpu, with_backends(browser=WITH_ADAPTER)) is None
    )
    bare = CHROMIUM.model_copy(update={"onnxruntime_web": None})
    assert "without onnxruntime-web (make browser-assets)" in str(
        unmet_requirement(TaskType.BENCHMARK, wasm, with_backends(browser=bare))
    )


def test_backend_hardware_kinds_are_offered_to_that_backend_only() -> None:
    worker_caps = with_backends(openvino=OV_CPU)
    openvino = needs(backend="openvino").model_copy(update={"hardware": [HardwareKind.OPENVINO]})
    assert unmet_requirement(TaskType.BENCHMARK, openvino, worker_caps) is None
    torch_on_openvino = Requirements(hardware=[HardwareKind.OPENVINO])
    assert unmet_requirement(TaskType.BENCHMARK, torch_on_openvino, worker_caps) == (
        "hardware: needs one of [openvino], worker offers [cpu] (to torch, for benchmarks)"
    )
    assert HardwareKind.OPENVINO in offered_hardware(TaskType.COMMAND, worker_caps)


# --------------------------------------------------------------------------- the scheduler


def test_the_scheduler_places_each_backend_where_it_runs_and_names_what_is_missing() -> None:
    webgpu = needs(backend="browser", backend_device="webgpu")
    ov_gpu = needs(backend="openvino", backend_device="GPU")
    tasks = [
        task("t-webgpu", task_type=TaskType.BENCHMARK, requirements=webgpu),
        task("t-ov-gpu", task_type=TaskType.BENCHMARK, requirements=ov_gpu),
        task("t-torch", task_type=TaskType.BENCHMARK, requirements=Requirements(), queued_at=1),
    ]
    workers = [
        worker("a-plain", with_backends(browser=CHROMIUM, openvino=OV_CPU)),
        worker("b-adapter", with_backends(browser=WITH_ADAPTER)),
    ]
    decisions = schedule(view(tasks, workers))
    assert placed(decisions.placements) == {"t-webgpu": "b-adapter", "t-torch": "a-plain"}
    (reason,) = decisions.unschedulable.values()
    assert reason == (
        "backend: needs openvino on GPU; connected workers have OpenVINO 2026.4 on [CPU]; "
        "no OpenVINO"
    )
