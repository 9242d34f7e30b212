"""Backend detection on this machine, for real: its Chromium (Debian's, which
the Makefile installs) asked in a child, ONNX Runtime and OpenVINO as the
project installs them, and a ``testfleet worker`` that reports them.

What this Chromium gave headless (Chromium 156, Debian 12, no GPU): a WebGPU
adapter only with --enable-unsafe-webgpu, and then SwiftShader's software
one ("google swiftshader"); no WebNN (``navigator.ml`` is absent);
WebAssembly SIMD, and threads on a cross-origin isolated page.
"""

from __future__ import annotations

from typing import Any

import pytest
from it_fleet import Fleet

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.local_fleet import WorkerOptions
from testfleet.worker.backend_probes import BackendProbes, probe_browser
from testfleet.worker.chromium import find_chromium
from testfleet.worker.hardware import detect_capabilities

pytestmark = pytest.mark.integration


def test_this_machines_chromium_offers_wasm_and_a_software_webgpu_adapter() -> None:
    path = find_chromium()
    assert path is not None, "no chromium on PATH: `make test` installs Debian's package"
    info = probe_browser()
    assert info is not None
    assert info.path == str(path)
    assert info.version.split(".")[0].isdigit()
    assert info.wasm.simd is True
    assert info.wasm.threads is True  # the probe page is cross-origin isolated
    assert info.webgpu.adapter is not None
    assert "swiftshader" in info.webgpu.adapter.casefold()
    assert info.webgpu.features  # e.g. "subgroups", "timestamp-query"


def test_detection_reports_every_backend_this_machine_has() -> None:
    caps = detect_capabilities(
        tags={}, task_types=[TaskType.BENCHMARK], probe_torch=False, backend_probes=BackendProbes()
    )
    assert caps.probe_errors == []
    assert caps.backends.onnxruntime is not None
    assert "CPUExecutionProvider" in caps.backends.onnxruntime.providers
    assert caps.backends.openvino is not None
    assert "CPU" in caps.backends.openvino.devices
    assert caps.backends.browser is not None
    assert HardwareKind.OPENVINO in caps.hardware
    assert HardwareKind.WEBGPU in caps.hardware
    assert HardwareKind.WEBNN not in caps.hardware


def test_a_worker_reports_its_backends_and_tasks_wait_for_a_backend_it_lacks(
    fleet: Fleet,
) -> None:
    fleet.start_coordinator()
    fleet.start_worker("w-backends", WorkerOptions(probe_backends=True, log_level="info"))
    (worker,) = [w for w in fleet.client.workers() if w["worker_id"] == "w-backends"]
    backends = worker["capabilities"]["backends"]
    assert "swiftshader" in backends["browser"]["webgpu"]["adapter"]
    assert backends["browser"]["onnxruntime_web"] == "1.31.1"
    assert "CPUExecutionProvider" in backends["onnxruntime"]["providers"]
    assert {"openvino", "webgpu"} <= set(worker["hardware"])

    fleet.client.submit(
        {
            "task_id": "needs-openvino-npu",
            "type": "benchmark",
            "config": {
                "model": "bert-base-uncased",
                "backend": "openvino",
                "backend_device": "NPU",
            },
        }
    )

    def waiting() -> dict[str, Any] | None:
        task: dict[str, Any] = fleet.task("needs-openvino-npu")["task"]
        return task if task.get("unschedulable_reason") else None

    task = fleet.wait_until(waiting, what="the task's unschedulable reason")
    assert task["status"] == "queued"
    assert task["unschedulable_reason"].startswith(
        "backend: needs openvino on NPU; connected workers have OpenVINO "
    )
    assert task["requirements"]["backend"] == {"name": "openvino", "device": "NPU"}


@pytest.mark.timeout(420)
def test_a_browser_benchmark_runs_through_the_fleet_and_is_stored(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fleet.start_coordinator()
    fleet.start_worker("w-browser", WorkerOptions(probe_backends=True, log_level="info"))
    tiny = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
            "intermediate_size": 64}  # fmt: skip
    config = {"model": "bert-base-uncased", "backend": "browser", "backend_device": "wasm",
              "batch_sizes": [1, 2], "iterations": 5, "warmup": 1, "sequence_length": 8,
              "threads": 1, "config_overrides": tiny}  # fmt: skip
    fleet.client.submit(
        {"task_id": "bert-wasm", "type": "benchmark", "config": config, "timeout_seconds": 300}
    )
    finished = fleet.wait_terminal(["bert-wasm"], timeout=360)
    assert finished["bert-wasm"]["status"] == "completed", fleet.task("bert-wasm")
    outcome = fleet.task("bert-wasm")["result"]["results"]
    assert outcome["backend"] == "browser"
    assert outcome["device"] == "browser:wasm"
    assert outcome["output_check"]["passed"] is True
    assert outcome["conditions"]["onnxruntime_web_version"] == "1.31.1"
    assert sorted(outcome["batch_sizes"], key=int) == ["1", "2"]
