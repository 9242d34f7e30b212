"""What a Chromium offers headless: WebGPU adapter, WebNN, WebAssembly SIMD and threads.

Callers: :func:`testfleet.worker.backend_probes.probe_browser` runs
:func:`browser_info` in a child interpreter (a browser that hangs is killed
with its process group). The page is served from this machine's loopback
(:class:`~testfleet.worker.chromium.LoopbackSite`): loopback is a secure
context (``navigator.gpu`` needs one) and the site's headers make the page
cross-origin isolated (threads need SharedArrayBuffer).
"""

from __future__ import annotations

from typing import Any

from testfleet.domain.hardware import BrowserInfo, WasmInfo, WebGpuInfo
from testfleet.worker.chromium import CHROMIUM_ARGS, LoopbackSite, guard_page

_PAGE = b"<!doctype html><title>testfleet probe</title>"

# Tiny modules for WebAssembly.validate (the wasm-feature-detect idea): one
# using a SIMD instruction (v128 i8x16.splat), and one declaring shared memory.
_JS = """async () => {
  const simd = new Uint8Array([0,97,115,109,1,0,0,0,1,5,1,96,0,1,123,3,2,1,0,10,10,1,8,0,
    65,0,253,15,253,98,11]);
  const shared = new Uint8Array([0,97,115,109,1,0,0,0,5,4,1,3,1,1]);
  const answer = {
    webnn: 'ml' in navigator,
    simd: WebAssembly.validate(simd),
    threads: self.crossOriginIsolated === true && typeof SharedArrayBuffer !== 'undefined'
      && WebAssembly.validate(shared),
    adapter: null, features: [], error: null,
  };
  try {
    const adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
    if (adapter) {
      const info = adapter.info || {};
      const parts = [info.vendor, info.architecture, info.device, info.description];
      answer.adapter = parts.filter((p) => p).join(' ') || 'unnamed adapter';
      answer.features = [...adapter.features].sort();
    }
  } catch (e) { answer.error = String(e); }
  return answer;
}"""


def adapter_from_page(answer: dict[str, Any]) -> WebGpuInfo:
    """The page's answer as a :class:`WebGpuInfo` (bounded: at most 64 features)."""
    adapter = answer.get("adapter")
    features = [str(f)[:128] for f in answer.get("features") or []][:64]
    return WebGpuInfo(adapter=str(adapter)[:256] if adapter else None, features=features)


def browser_info(path: str) -> BrowserInfo:
    """Launch the Chromium at ``path`` headless and ask its page (runs in the child)."""
    from playwright.sync_api import sync_playwright

    refused: list[str] = []
    with LoopbackSite(pages={"index.html": _PAGE}) as site, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            context = browser.new_context()
            guard_page(context, site.origin, refused)
            page = context.new_page()
            page.goto(site.url("index.html"))
            answer = page.evaluate(_JS)
            version = str(browser.version)
        finally:
            browser.close()
    if refused:
        raise RuntimeError(f"the probe page asked for another origin: {refused[0]}")
    return BrowserInfo(
        path=path,
        version=version[:64],
        webgpu=adapter_from_page(answer),
        webnn=bool(answer.get("webnn")),
        wasm=WasmInfo(simd=bool(answer.get("simd")), threads=bool(answer.get("threads"))),
    )
