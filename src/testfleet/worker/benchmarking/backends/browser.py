"""The browser backend: the ONNX export run by onnxruntime-web in headless
Chromium, on the ``wasm`` or ``webgpu`` device.

Callers: :func:`~testfleet.worker.benchmarking.backends.backend_for` for tasks
with ``backend: browser`` (the seam's order of calls is in :mod:`.base`), in
the benchmark child process.

* Where it runs: the worker's Chromium (``--browser``, else chromium on PATH;
  :mod:`testfleet.worker.chromium`) driven by Playwright's sync API. The page,
  onnxruntime-web's files (``--browser-assets``, else the checkout's
  ``browser/``, :mod:`testfleet.worker.browser_assets`) and the model are
  served by a :class:`~testfleet.worker.chromium.LoopbackSite` of this run
  (127.0.0.1, random port and path); any request for another origin is
  aborted and fails the run.
* Device: ``wasm`` (onnxruntime-web's WebAssembly, SIMD, threads where the
  page is cross-origin isolated, which the site makes it) or ``webgpu``. A
  browser with no WebGPU adapter is ``invalid_config`` "no WebGPU adapter in
  this browser", never a wasm result. Headless Chromium here offers
  SwiftShader's software adapter (``--enable-unsafe-webgpu``); the adapter's
  name is in the conditions, so a software figure is never read as a GPU's.
* Timing: inside the page, ``performance.now`` around each ``session.run``
  (warm-up first, untimed), so the figures carry no Playwright round trip
  (:meth:`BrowserBackend.time_steps`). Outputs come back for the output check.
* Steady state: Chromium starts with V8 optimising a wasm function on the
  spot once it is hot (:data:`~testfleet.worker.chromium.WASM_TIERING_FLAG`),
  rather than in the background some passes later, so the warm-up passes
  leave the timed ones running optimised code (the conditions say so,
  ``wasm_tiering``).
* Precision: fp32 only (onnxruntime-web's fp16 needs an fp16 export and a
  WebGPU adapter with shader-f16); anything else is ``invalid_config``.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testfleet.domain.benchmark import BROWSER_DEVICES, BenchmarkBackend, BenchmarkConfig, Precision
from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.backends.base import Backend, BackendDescription, Feeds
from testfleet.worker.benchmarking.errors import BenchmarkError, describe
from testfleet.worker.browser_assets import BrowserAssetsError, assets_dir, onnxruntime_web_version
from testfleet.worker.chromium import (
    CHROMIUM_ARGS,
    WASM_TIERING_FLAG,
    BrowserNotFoundError,
    LoopbackSite,
    find_chromium,
    guard_page,
)

if TYPE_CHECKING:
    from testfleet.worker.benchmarking.backends.base import Array
    from testfleet.worker.benchmarking.backends.onnx_export import ExportedModel

#: The page and its module (beside this package's modules, shipped as package data).
PAGE_DIR = Path(__file__).resolve().parents[1] / "browser_page"
#: How long the page may take to load its module (a loaded machine's seconds, not a minute).
PAGE_READY_MS = 60_000
#: ONNX element types as onnxruntime-web names them -> NumPy dtypes.
_DTYPES = {
    "float32": "float32",
    "float16": "float16",
    "float64": "float64",
    "int64": "int64",
    "int32": "int32",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
}


def _encode(inputs: Feeds) -> list[dict[str, Any]]:
    """Inputs as the page's ``feeds`` takes them: raw bytes in base64 (exact, and
    far smaller than JSON numbers for a batch of hidden states)."""
    import numpy as np

    encoded = []
    for name, array in inputs.items():
        contiguous = np.ascontiguousarray(array)
        dtype = "bool" if contiguous.dtype == np.bool_ else str(contiguous.dtype)
        if dtype not in _DTYPES:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"input {name}: the browser backend cannot pass {dtype} tensors",
            )
        encoded.append(
            {
                "name": name,
                "dtype": dtype,
                "dims": list(contiguous.shape),
                "data": base64.b64encode(contiguous.tobytes()).decode("ascii"),
            }
        )
    return encoded


def decode_output(output: dict[str, Any]) -> Array:
    """One output of the page (``{dtype, dims, data}``) as a NumPy array."""
    import numpy as np

    dtype = _DTYPES.get(str(output["dtype"]))
    if dtype is None:
        raise BenchmarkError(
            ErrorClass.INFRASTRUCTURE,
            f"the page returned output {output.get('name')} as {output['dtype']}",
        )
    raw = base64.b64decode(output["data"])
    array: Array = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(
        [int(d) for d in output["dims"]]
    )
    return array


def external_data_files(model: Path) -> list[str]:
    """The files the ONNX file keeps its weights in (the dynamo exporter writes
    ``model.onnx.data`` beside it); onnxruntime-web must be told each one."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    names: set[str] = set()
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            names.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(names)


class BrowserBackend(Backend):
    kind = BenchmarkBackend.BROWSER

    def __init__(self) -> None:
        self._device = BROWSER_DEVICES[0]
        self._threads: int | None = None
        self._chromium: Path | None = None
        self._assets: Path | None = None
        self._site: LoopbackSite | None = None
        self._playwright: Any = None
        self._browser: Any = None
        self._page: Any = None
        self._refused: list[str] = []
        self._loaded: dict[str, Any] = {}
        self._console: list[str] = []

    def check(self, config: BenchmarkConfig) -> None:
        self._device = config.resolved_backend_device or BROWSER_DEVICES[0]
        if config.precision is not Precision.FP32:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"the browser backend runs fp32, not {config.precision.value}; ask for fp32",
            )
        try:
            self._chromium = find_chromium()
        except BrowserNotFoundError as exc:
            raise BenchmarkError(ErrorClass.INVALID_CONFIG, str(exc)) from exc
        if self._chromium is None:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                "the browser backend needs a Chromium: none on this worker's PATH "
                "(install one, or start the worker with --browser PATH)",
            )
        if importlib.util.find_spec("playwright") is None:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                "the browser backend needs the playwright package on the worker: "
                "pip install 'testfleet[browser]'",
            )
        try:
            self._assets = assets_dir()
        except BrowserAssetsError as exc:
            raise BenchmarkError(ErrorClass.INVALID_CONFIG, str(exc)) from exc
        self._threads = config.threads

    def _files(self, exported: ExportedModel) -> dict[str, Path]:
        assert self._assets is not None
        files = {p.name: p for p in self._assets.iterdir() if p.suffix in (".mjs", ".wasm", ".js")}
        files.update({p.name: p for p in PAGE_DIR.iterdir() if p.is_file()})
        files["model.onnx"] = exported.path
        for name in external_data_files(exported.path):
            files[name] = exported.path.parent / name
        return files

    def load(self, exported: ExportedModel, config: BenchmarkConfig) -> None:
        from playwright.sync_api import sync_playwright

        assert self._chromium is not None
        site = self._site = LoopbackSite(files=self._files(exported)).start()
        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(
                executable_path=str(self._chromium), headless=True, args=list(CHROMIUM_ARGS)
            )
        except Exception as exc:
            raise BenchmarkError(
                ErrorClass.INFRASTRUCTURE,
                f"Chromium {self._chromium} did not start headless: {describe(exc)}",
            ) from exc
        context = self._browser.new_context()
        guard_page(context, site.origin, self._refused)
        page = self._page = context.new_page()
        page.on("console", lambda message: self._console.append(str(message.text)[:300]))
        page.goto(site.url("index.html"))
        page.wait_for_function("window.testfleetReady === true", timeout=PAGE_READY_MS)
        request = {
            "model_url": site.url("model.onnx"),
            "device": self._device,
            "threads": self._threads or 0,  # 0: onnxruntime-web's default
            "external_data": [
                {"path": name, "data": site.url(name)}
                for name in external_data_files(exported.path)
            ],
        }
        try:
            answer = page.evaluate("request => window.testfleetLoad(request)", request)
        except Exception as exc:
            self._outside_requests()
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"onnxruntime-web ({self._device}) cannot load the exported model: {describe(exc)}",
            ) from exc
        self._outside_requests()
        if answer.get("unsupported"):
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"{answer['unsupported']} (Chromium {self._browser.version} headless); "
                "backend_device webgpu needs one: run it on a worker whose capabilities "
                "show a WebGPU adapter, or ask for backend_device wasm",
            )
        self._loaded = answer

    def _outside_requests(self) -> None:
        """Fail the run if the page asked for anything but this run's site."""
        if self._refused:
            raise BenchmarkError(
                ErrorClass.INFRASTRUCTURE,
                f"the benchmark page asked for another origin ({self._refused[0]}); "
                "browser benchmarks load nothing from outside this worker",
            )

    def describe(self) -> BackendDescription:
        assert self._assets is not None
        web_version = str(self._loaded.get("ort_version") or onnxruntime_web_version(self._assets))
        adapter = self._loaded.get("adapter")
        if self._device == "webgpu":
            name = f"WebGPU {adapter}"
        else:
            from testfleet.worker.benchmarking.accelerator import cpu_name

            name = f"WebAssembly on {cpu_name()}"
        return BackendDescription(
            device=f"browser:{self._device}",
            device_name=name,
            # The runner samples its own process; the page runs in Chromium.
            memory_metric="runner process RSS (the browser's own memory is not counted)",
            conditions={
                "backend": self.kind.value,
                "backend_version": web_version,
                "onnxruntime_web_version": web_version,
                "backend_device": self._device,
                "browser": "chromium",
                "browser_version": str(self._browser.version),
                "browser_path": str(self._chromium),
                "webgpu_adapter": adapter,
                "wasm_threads": self._loaded.get("threads"),
                "cross_origin_isolated": self._loaded.get("cross_origin_isolated"),
                "wasm_simd": True,  # onnxruntime-web 1.31 ships SIMD builds only
                "backend_precision": Precision.FP32.value,
                "backend_threads": self._loaded.get("threads"),
                "timing": "performance.now() around session.run, inside the page",
                "wasm_tiering": f"hot functions optimised synchronously ({WASM_TIERING_FLAG})",
            },
        )

    def run(self, inputs: Feeds) -> list[Array]:
        outputs = self._page.evaluate("inputs => window.testfleetRun(inputs)", _encode(inputs))
        self._outside_requests()
        return [decode_output(output) for output in outputs]

    def time_steps(self, inputs: Feeds, *, warmup: int, iterations: int) -> list[int] | None:
        times_ms = self._page.evaluate(
            "([inputs, warmup, iterations]) => window.testfleetTime(inputs, warmup, iterations)",
            [_encode(inputs), warmup, iterations],
        )
        self._outside_requests()
        return [round(float(ms) * 1_000_000) for ms in times_ms]

    def close(self) -> None:
        # Each step on its own: a browser that died must not keep the site open.
        # Exceptions suppressed: the page, browser or driver is already gone.
        if self._page is not None:
            with contextlib.suppress(Exception):
                self._page.evaluate("() => window.testfleetClose()")
        if self._browser is not None:
            with contextlib.suppress(Exception):
                self._browser.close()
        if self._playwright is not None:
            with contextlib.suppress(Exception):
                self._playwright.stop()
        if self._site is not None:
            self._site.close()
        self._page = self._browser = self._playwright = self._site = None
