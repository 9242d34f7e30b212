"""benchmarks/backends.py's core (pairing, the table, absent backends) with fake
figures, and benchmarks/gpu_check.py's CPU-side parts: its help, its probe, and
a missing CUDA provider reported as absent (issue 15)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))

from backends import (  # noqa: E402
    SPECS,
    BackendFigures,
    BackendSpec,
    absent_reason,
    paired_differences,
    rounds_lines,
    spec_config,
    table,
)
from browser_plain import page_inputs  # noqa: E402
from fidelity import beside, keep_beside  # noqa: E402
from gpu_check import CUDA_PROVIDER, onnxruntime_cuda_absent  # noqa: E402


def test_each_testfleet_round_is_paired_with_the_plain_rounds_either_side() -> None:
    assert paired_differences([10.0, 12.0, 8.0], [11.0, 11.0]) == pytest.approx([0.0, 0.1])
    with pytest.raises(ValueError, match="one plain round more"):
        paired_differences([10.0], [10.0])


def fleet_result(p50: float, check: dict[str, object] | None) -> dict[str, object]:
    return {
        "batch_sizes": {"1": {"latency_p50_ms": p50, "throughput_items_per_second": 1000 / p50}},
        "output_check": check,
    }


def test_the_table_shows_the_difference_the_check_and_the_absent_backends() -> None:
    ort = BackendFigures(
        BackendSpec("ONNX Runtime CPU", "onnxruntime"),
        plain=[{"1": {"p50": 2.0}}, {"1": {"p50": 2.0}}],
        fleet=[fleet_result(2.1, {"passed": True, "max_abs_diff": 1e-6, "tolerance": 1e-3})],
    )
    torch = BackendFigures(
        BackendSpec("torch CPU", "torch"),
        plain=[{"1": {"p50": 4.0}}, {"1": {"p50": 4.0}}],
        fleet=[fleet_result(3.8, None)],
    )
    lines = table([torch, ort], {"browser WebGPU": "no Chromium on PATH"}, ["1"])
    assert "-5.0%" in lines[1]
    assert "torch (the reference)" in lines[1]
    assert "+5.0%" in lines[2]
    assert "passed (max |diff| 1e-06 <= 0.001)" in lines[2]
    assert lines[3].split() == ["browser", "WebGPU", "absent:", "no", "Chromium", "on", "PATH"]


def test_every_round_is_listed_in_the_order_it_was_measured() -> None:
    ort = BackendFigures(
        BackendSpec("ONNX Runtime CPU", "onnxruntime"),
        plain=[{"1": {"p50": 2.0}}, {"1": {"p50": 2.5}}, {"1": {"p50": 3.0}}],
        fleet=[fleet_result(2.1, None), fleet_result(2.7, None)],
    )
    lines = rounds_lines([ort], ["1"])
    assert lines[1].split(": ", 1)[1] == "p 2.00, t 2.10, p 2.50, t 2.70, p 3.00"


def test_the_measured_core_is_left_to_the_runner_and_the_agent_moves_beside_it() -> None:
    # A real process with a second thread, as the worker's agent has several,
    # and a process of its own started before the move (as the worker's orphan
    # guard and spare pytest session are).
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, threading, time; threading.Thread(target=time.sleep, "
            "args=(60,), daemon=True).start(); grandchild = subprocess.Popen([sys.executable, "
            "'-c', 'import time; time.sleep(60)']); print(grandchild.pid, flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    grandchild = 0
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        measured = max(os.sched_getaffinity(0))
        keep_beside(child.pid, measured)
        threads = [int(t.name) for t in Path(f"/proc/{child.pid}/task").iterdir()]
        assert len(threads) == 2
        threads += [int(t.name) for t in Path(f"/proc/{grandchild}/task").iterdir()]
        expected = beside(measured)
        assert all(os.sched_getaffinity(t) == expected for t in threads)
        if len(os.sched_getaffinity(0)) > 1:
            assert measured not in expected
        else:  # one core: nowhere else to go, so it stays
            assert expected == {measured}
    finally:
        if grandchild:
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()


def test_a_backend_testfleet_lacks_is_absent_not_measured_another_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from testfleet.domain.benchmark import BenchmarkBackend
    from testfleet.worker.benchmarking import backends

    monkeypatch.setattr(
        backends, "BACKENDS", {k: v for k, v in backends.BACKENDS.items() if k.value != "openvino"}
    )
    reason = absent_reason(BackendSpec("OpenVINO CPU", BenchmarkBackend.OPENVINO.value))
    assert reason == "this testfleet has no openvino benchmark backend"
    assert absent_reason(BackendSpec("torch CPU", "torch")) is None


WASM = next(spec for spec in SPECS if spec.backend_device == "wasm")
WEBGPU = next(spec for spec in SPECS if spec.backend_device == "webgpu")
BASE = {"model": "bert-base-uncased", "batch_sizes": [1], "iterations": 20, "warmup": 5}


def test_the_browser_specs_ask_testfleet_for_the_browser_on_their_device() -> None:
    assert spec_config(BASE, WASM, 2) == {**BASE, "backend": "browser", "backend_device": "wasm"}
    # WebGPU is software here (seconds a run): its iterations are kept tiny.
    webgpu = spec_config(BASE, WEBGPU, 2)
    assert (webgpu["backend"], webgpu["backend_device"]) == ("browser", "webgpu")
    assert (webgpu["iterations"], webgpu["warmup"]) == (2, 1)
    from testfleet.domain.benchmark import BenchmarkConfig

    for config in (spec_config(BASE, WASM, 2), webgpu):
        assert BenchmarkConfig.model_validate(config).backend_device == config["backend_device"]


def test_webgpu_is_absent_unless_opted_in_and_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    from testfleet.worker import chromium

    def no_browser_needed() -> None:
        raise AssertionError("not opted in: nothing may be looked for")

    monkeypatch.setattr(chromium, "find_chromium", no_browser_needed)
    reason = absent_reason(WEBGPU)
    assert reason is not None
    assert "--webgpu" in reason


def test_the_browser_without_a_chromium_is_absent_with_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from testfleet.worker import chromium

    monkeypatch.setattr(chromium, "find_chromium", lambda: None)
    assert absent_reason(WASM) == (
        "no Chromium on PATH (install chromium, or set $TESTFLEET_BROWSER)"
    )
    assert absent_reason(WEBGPU, webgpu=True) == absent_reason(WASM)


def test_a_named_browser_that_is_not_there_is_absent_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TESTFLEET_BROWSER", str(tmp_path / "no-chromium"))
    reason = absent_reason(WASM)
    assert reason is not None
    assert "no-chromium" in reason


def test_the_browser_without_onnxruntime_web_is_absent_naming_the_make_target(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from testfleet.worker import chromium

    monkeypatch.setattr(chromium, "find_chromium", lambda: tmp_path / "chromium")
    monkeypatch.setenv("TESTFLEET_BROWSER_ASSETS", str(tmp_path))
    reason = absent_reason(WASM)
    assert reason is not None
    assert "make browser-assets" in reason


def test_the_plain_page_gets_flat_values_with_their_dtype_and_shape() -> None:
    import numpy as np

    ids = np.arange(6, dtype=np.int64).reshape(2, 3)
    mask = np.array([[True, False]])
    assert page_inputs({"input_ids": ids, "mask": mask}) == [
        {"name": "input_ids", "dtype": "int64", "dims": [2, 3], "data": [0, 1, 2, 3, 4, 5]},
        {"name": "mask", "dtype": "bool", "dims": [1, 2], "data": [1, 0]},
    ]
    with pytest.raises(SystemExit, match="input x as float64"):
        page_inputs({"x": np.zeros(1)})


def test_gpu_check_reports_a_missing_cuda_provider_as_absent_naming_the_fix() -> None:
    reason = onnxruntime_cuda_absent(["AzureExecutionProvider", "CPUExecutionProvider"])
    assert reason is not None
    assert "CPUExecutionProvider" in reason
    assert "onnxruntime-gpu" in reason
    assert onnxruntime_cuda_absent([CUDA_PROVIDER, "CPUExecutionProvider"]) is None


def test_gpu_check_helps_and_probes_without_a_gpu() -> None:
    script = str(ROOT / "benchmarks" / "gpu_check.py")
    helped = subprocess.run(
        [sys.executable, script, "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0
    assert "--probe-only" in helped.stdout
    probed = subprocess.run(
        [sys.executable, script, "--probe-only"], capture_output=True, text=True, timeout=120
    )
    assert probed.returncode == 0, probed.stderr
    lines = dict(line.split(": ", 1) for line in probed.stdout.splitlines())
    assert set(lines) == {"onnxruntime-cuda", "browser-webgpu"}
    # This machine has no GPU: the CUDA provider is reported as absent, with why.
    assert lines["onnxruntime-cuda"].startswith("absent: ")


def test_backends_names_an_unknown_backend_and_the_choices() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "backends.py"), "--backends", "torch,tensorrt"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--backends: tensorrt; choose from browser, onnxruntime, openvino, torch" in done.stderr
