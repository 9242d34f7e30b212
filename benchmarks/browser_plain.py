"""The plain loop of the browser backend for benchmarks/backends.py: the bare
onnxruntime-web API in headless Chromium, with none of testfleet's timing code.

Caller: ``backends.py --plain-child`` (:func:`backends.plain_loop`) for a
``browser`` spec, in a fresh process pinned like the worker's runner.

What it shares with the worker, and why only that: the worker's helpers are
reused for what is *not* timing, so both sides run the same browser the same
way: :func:`~testfleet.worker.chromium.find_chromium` (which Chromium),
:data:`~testfleet.worker.chromium.CHROMIUM_ARGS` (its flags, incl.
``--enable-unsafe-webgpu``), :class:`~testfleet.worker.chromium.LoopbackSite`
(127.0.0.1, with the COOP/COEP headers that make the page cross-origin
isolated, so wasm threads exist on both sides) and
:func:`~testfleet.worker.browser_assets.assets_dir` (the same onnxruntime-web
files). The page, the session and the timed loop are this module's own: a
page of a few lines that imports onnxruntime-web, ``InferenceSession.create``
with the worker's options (execution provider ``wasm`` or ``webgpu``, graph
optimisation ``all``, the same ``ort.env.wasm.numThreads``) driven from
Playwright's ``page.evaluate``, and ``performance.now`` around each
``session.run`` after untimed warm-up passes, all inside the page so no
Playwright round trip is timed (as on the worker's side).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

#: The whole page: onnxruntime-web's ES module, put where page.evaluate finds it.
PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>plain onnxruntime-web loop</title>
<script type="module">
import * as ort from './ort.webgpu.min.mjs';
window.ort = ort;
</script>
"""

#: Create the session as onnxruntime-web's documentation shows, with the worker's options.
CREATE = """async ({model, device, threads, externalData}) => {
  ort.env.wasm.wasmPaths = new URL('./', location.href).href;
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = 'error';
  window.session = await ort.InferenceSession.create(model, {
    executionProviders: [device], graphOptimizationLevel: 'all', externalData,
  });
  return {threads: ort.env.wasm.numThreads, isolated: self.crossOriginIsolated === true};
}"""

#: The textbook loop: warm-up untimed, then performance.now around each run (ms).
TIME = """async ([inputs, warmup, iterations]) => {
  const feeds = {};
  for (const input of inputs) {
    const data = input.dtype === 'int64' ? BigInt64Array.from(input.data, (v) => BigInt(v))
      : input.dtype === 'float32' ? Float32Array.from(input.data)
      : input.dtype === 'int32' ? Int32Array.from(input.data)
      : Uint8Array.from(input.data);
    feeds[input.name] = new ort.Tensor(input.dtype, data, input.dims);
  }
  for (let i = 0; i < warmup; i += 1) await session.run(feeds);
  const times = [];
  for (let i = 0; i < iterations; i += 1) {
    const started = performance.now();
    await session.run(feeds);
    times.push(performance.now() - started);
  }
  return times;
}"""

#: NumPy dtypes the page takes (a BERT's inputs are int64; the rest for other models).
DTYPES = ("int64", "float32", "int32", "bool")


def page_inputs(feeds: dict[str, Any]) -> list[dict[str, Any]]:
    """NumPy feeds as the page's ``TIME`` takes them: name, dtype, dims, flat values."""
    inputs = []
    for name, array in feeds.items():
        dtype = str(array.dtype)
        if dtype not in DTYPES:
            raise SystemExit(f"the plain browser loop cannot pass input {name} as {dtype}")
        values = array.astype("uint8") if dtype == "bool" else array
        inputs.append(
            {
                "name": name,
                "dtype": dtype,
                "dims": list(array.shape),
                "data": values.ravel().tolist(),
            }
        )
    return inputs


class PlainBrowser:
    """One Chromium with one onnxruntime-web session on the exported model."""

    def __init__(self, model: Path, device: str, threads: int | None) -> None:
        from playwright.sync_api import sync_playwright

        from testfleet.worker.benchmarking.backends.browser import external_data_files
        from testfleet.worker.browser_assets import assets_dir
        from testfleet.worker.chromium import CHROMIUM_ARGS, LoopbackSite, find_chromium

        chromium = find_chromium()
        if chromium is None:
            raise SystemExit("the plain browser loop needs a Chromium on PATH")
        assets = assets_dir()
        files = {p.name: p for p in assets.iterdir() if p.suffix in (".mjs", ".wasm", ".js")}
        external = external_data_files(model)
        files["model.onnx"] = model
        files.update({name: model.parent / name for name in external})
        self.site = LoopbackSite(files=files, pages={"index.html": PAGE}).start()
        self.playwright = sync_playwright().start()
        self.browser: Any = None
        try:
            self.browser = self.playwright.chromium.launch(
                executable_path=str(chromium), headless=True, args=list(CHROMIUM_ARGS)
            )
            self.page = self.browser.new_page()
            self.page.goto(self.site.url("index.html"))
            self.page.wait_for_function("window.ort !== undefined", timeout=60_000)
            self.loaded = self.page.evaluate(
                CREATE,
                {
                    "model": self.site.url("model.onnx"),
                    "device": device,
                    "threads": threads or 0,  # 0: onnxruntime-web's default, as on the worker
                    "externalData": [{"path": n, "data": self.site.url(n)} for n in external],
                },
            )
        except BaseException:
            self.close()  # no Chromium or loopback site left behind by a failed start
            raise

    def time(self, feeds: dict[str, Any], warmup: int, iterations: int) -> dict[str, float]:
        samples = [
            float(ms) for ms in self.page.evaluate(TIME, [page_inputs(feeds), warmup, iterations])
        ]
        return {"p50": statistics.median(samples), "mean": statistics.fmean(samples)}

    def close(self) -> None:
        try:
            if self.browser is not None:
                self.browser.close()
            self.playwright.stop()
        finally:
            self.site.close()
