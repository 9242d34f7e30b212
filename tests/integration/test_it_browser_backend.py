"""The browser backend for real: a small BERT exported to ONNX, run by
onnxruntime-web (browser/, npm) in Debian's Chromium (the Makefile installs
both), its outputs checked against torch's on the same weights and inputs.

What WebGPU gave headless on this machine (Chromium 156, no GPU): with
--enable-unsafe-webgpu, SwiftShader's software adapter ("google
swiftshader"), on which onnxruntime-web's WebGPU provider runs and agrees with
torch; without the flag no adapter, which the backend refuses as
``invalid_config`` "no WebGPU adapter in this browser", never a wasm result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from testfleet.domain.benchmark import BenchmarkConfig
from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.backends import browser as browser_module
from testfleet.worker.benchmarking.backends.browser import BrowserBackend
from testfleet.worker.benchmarking.errors import BenchmarkError
from testfleet.worker.chromium import LoopbackSite, find_chromium, guard_page

pytestmark = pytest.mark.integration

#: One layer, 32 wide: the export and the runs take seconds, not minutes.
TINY = {
    "num_hidden_layers": 1,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
TOLERANCE = 1e-3


def config(device: str) -> BenchmarkConfig:
    return BenchmarkConfig.model_validate(
        {
            "model": "bert-base-uncased",
            "config_overrides": TINY,
            "sequence_length": 8,
            "backend": "browser",
            "backend_device": device,
        }
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    """(the export, the inputs of batch 3 as NumPy, torch's output on them)."""
    from testfleet.worker.benchmarking.backends.onnx_export import export_onnx
    from testfleet.worker.benchmarking.inputs import make_inputs, plan_inputs
    from testfleet.worker.benchmarking.models import load_model

    cfg = config("wasm")
    torch.manual_seed(0)
    loaded = load_model(cfg)
    model = loaded.model.eval()
    plan = plan_inputs(loaded, cfg)
    cpu = torch.device("cpu")

    def split(inputs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        return tensors, {k: v for k, v in inputs.items() if k not in tensors}

    example, kwargs = split(make_inputs(plan, 2, device=cpu, float_dtype=torch.float32))
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    export = export_onnx(model, example, path, call_kwargs=kwargs)
    inputs, kwargs = split(make_inputs(plan, 3, device=cpu, float_dtype=torch.float32))
    with torch.no_grad():
        reference = model(**inputs, **kwargs)[0].numpy()
    return export, {k: v.numpy() for k, v in inputs.items()}, reference


def run(device: str, exported: tuple[Any, Any, Any]) -> tuple[list[int], Any, dict[str, Any]]:
    export, inputs, _ = exported
    backend = BrowserBackend()
    cfg = config(device)
    try:
        backend.check(cfg)
        backend.load(export, cfg)
        conditions = backend.describe().conditions
        (output,) = backend.run(inputs)
        times = backend.time_steps(inputs, warmup=1, iterations=3)
    finally:
        backend.close()
    assert times is not None
    return times, output, conditions


def test_wasm_runs_the_model_and_agrees_with_torch(exported: tuple[Any, Any, Any]) -> None:
    times, output, conditions = run("wasm", exported)
    reference = exported[2]
    assert output.shape == reference.shape
    assert float(np.abs(output - reference).max()) < TOLERANCE
    assert len(times) == 3
    assert all(t > 0 for t in times)
    assert conditions["backend_device"] == "wasm"
    assert conditions["onnxruntime_web_version"] == "1.31.1"  # browser/package-lock.json
    assert conditions["browser_version"].split(".")[0].isdigit()
    assert conditions["cross_origin_isolated"] is True
    assert conditions["webgpu_adapter"] is None


def test_webgpu_runs_on_chromiums_software_adapter_and_agrees(
    exported: tuple[Any, Any, Any],
) -> None:
    times, output, conditions = run("webgpu", exported)
    assert float(np.abs(output - exported[2]).max()) < TOLERANCE
    assert len(times) == 3
    assert "swiftshader" in str(conditions["webgpu_adapter"])  # named: never read as a GPU's


def test_no_webgpu_adapter_is_refused_never_run_on_wasm(
    exported: tuple[Any, Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    without = tuple(a for a in browser_module.CHROMIUM_ARGS if a != "--enable-unsafe-webgpu")
    monkeypatch.setattr(browser_module, "CHROMIUM_ARGS", without)
    backend = BrowserBackend()
    cfg = config("webgpu")
    try:
        backend.check(cfg)
        with pytest.raises(BenchmarkError) as caught:
            backend.load(exported[0], cfg)
    finally:
        backend.close()
    assert caught.value.error_class is ErrorClass.INVALID_CONFIG
    assert "no WebGPU adapter in this browser" in str(caught.value)


def test_a_page_that_asks_for_another_origin_is_caught(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    assert chromium is not None
    page_html = b'<!doctype html><img src="http://192.0.2.1/tracker.png">'
    refused: list[str] = []
    with LoopbackSite(pages={"index.html": page_html}) as site, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium))
        try:
            context = browser.new_context()
            guard_page(context, site.origin, refused)
            page = context.new_page()
            page.goto(site.url("index.html"), wait_until="load")
        finally:
            browser.close()
    assert refused == ["http://192.0.2.1/tracker.png"]
