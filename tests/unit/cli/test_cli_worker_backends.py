"""``testfleet workers`` shows each worker's detected benchmark backends (issue 15)."""

from __future__ import annotations

import io

from testfleet.cli.tables import backends_cell, workers_table
from testfleet.cli.terminal_text import SafeConsole
from testfleet.domain.hardware import (
    BackendInfo,
    BrowserInfo,
    OnnxRuntimeInfo,
    OpenVinoInfo,
    WasmInfo,
    WebGpuInfo,
)

DETECTED = BackendInfo(
    onnxruntime=OnnxRuntimeInfo(version="1.32.0", providers=["CPUExecutionProvider"]),
    openvino=OpenVinoInfo(version="2026.4.1-22982-e213a", devices=["CPU"]),
    browser=BrowserInfo(
        path="/usr/bin/chromium",
        version="156.0.8078.129",
        webgpu=WebGpuInfo(adapter="google swiftshader"),
        wasm=WasmInfo(simd=True, threads=True),
        onnxruntime_web="1.31.1",
    ),
).model_dump(mode="json")


def test_every_backend_in_one_cell() -> None:
    assert backends_cell(DETECTED) == (
        "ort 1.32.0 [CPU]; openvino 2026.4.1 [CPU]; "
        "chromium 156 [wasm+threads, webgpu: google swiftshader; ort-web 1.31.1]"
    )


def test_none_detected_or_an_older_worker_shows_a_dash() -> None:
    assert backends_cell({}) == "-"
    assert backends_cell(BackendInfo().model_dump(mode="json")) == "-"


def test_a_browser_without_onnxruntime_web_says_so() -> None:
    browser = {**DETECTED["browser"], "onnxruntime_web": None, "webgpu": {"adapter": None}}
    assert backends_cell({"browser": browser}) == "chromium 156 [wasm+threads; no onnxruntime-web]"


def test_the_workers_table_has_the_backends_column() -> None:
    worker = {
        "worker_id": "w1",
        "hostname": "box",
        "status": "connected",
        "slots": 1,
        "running": 0,
        "hardware": ["cpu", "openvino", "webgpu"],
        "capabilities": {
            "cpu": {"model": "EPYC", "logical_cores": 2},
            "memory_gb": 8.0,
            "backends": DETECTED,
        },
        "tags": {},
    }
    out = io.StringIO()
    SafeConsole(file=out, width=400, color_system=None).print(workers_table([worker]))
    text = out.getvalue()
    assert "backends" in text
    assert "webgpu: google swiftshader" in text
    assert "cpu,openvino,webgpu" in text


def test_a_fleet_without_backends_keeps_the_table_it_had() -> None:
    worker = {
        "worker_id": "w1",
        "hostname": "box",
        "status": "connected",
        "slots": 1,
        "running": 0,
        "hardware": ["cpu"],
        "capabilities": {"cpu": {"model": "EPYC", "logical_cores": 2}, "memory_gb": 8.0},
        "tags": {},
    }
    out = io.StringIO()
    SafeConsole(file=out, width=400, color_system=None).print(workers_table([worker]))
    assert "backends" not in out.getvalue()
