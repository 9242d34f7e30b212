"""Where the browser backend's JavaScript comes from: onnxruntime-web's files,
installed by npm from the checkout's ``browser/package-lock.json``.

Callers: ``testfleet worker`` checks ``--browser-assets`` once at start
(:func:`check_assets_dir`, so a wrong directory ends the command in one
line), and the browser backend resolves the directory in the benchmark child
(:func:`assets_dir`), from :data:`ASSETS_ENV` (which the worker sets for its
children) or the checkout's default. The worker serves these files itself on
127.0.0.1; nothing is fetched from a CDN.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Set by ``testfleet worker --browser-assets``: onnxruntime-web's ``dist`` directory.
ASSETS_ENV = "TESTFLEET_BROWSER_ASSETS"

#: The files a run needs: the ES module with the wasm and WebGPU execution
#: providers, and the WebAssembly build it loads for both (onnxruntime-web
#: 1.31's asyncify build; seen in the requests of a real run here).
REQUIRED_FILES = (
    "ort.webgpu.min.mjs",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
)

#: The make target that runs ``npm ci`` in ``browser/``.
MAKE_TARGET = "make browser-assets"


class BrowserAssetsError(RuntimeError):
    """The onnxruntime-web files are not where they were looked for."""


def default_assets_dir() -> Path:
    """``browser/node_modules/onnxruntime-web/dist`` of the checkout this package is in."""
    checkout = Path(__file__).resolve().parents[3]
    return checkout / "browser" / "node_modules" / "onnxruntime-web" / "dist"


def check_assets_dir(directory: Path, *, option: str = "--browser-assets") -> Path:
    """``directory`` when it holds :data:`REQUIRED_FILES`, else a clear error
    naming what is missing and how to get it."""
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise BrowserAssetsError(
            f"{option} {directory}: no onnxruntime-web there (missing {', '.join(missing)}); "
            f"run `{MAKE_TARGET}` (npm ci in browser/) or point {option} at "
            "onnxruntime-web's dist directory"
        )
    return directory


def assets_dir() -> Path:
    """The directory to serve: :data:`ASSETS_ENV` when set, else the checkout's, checked."""
    named = os.environ.get(ASSETS_ENV)
    if named:
        return check_assets_dir(Path(named).expanduser())
    return check_assets_dir(default_assets_dir(), option="the browser assets directory")


def onnxruntime_web_version(directory: Path) -> str:
    """onnxruntime-web's version, from its package.json beside ``dist`` ("unknown" without one)."""
    try:
        package = json.loads((directory.parent / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    return str(package.get("version", "unknown"))[:64]
