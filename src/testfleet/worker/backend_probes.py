"""Which benchmark backends besides torch this worker can run: ONNX Runtime,
OpenVINO and a Chromium (issue 15).

Callers: :func:`testfleet.worker.hardware.detect_capabilities` calls
:func:`detect_backends` once at start-up (``testfleet worker``, unless
``--no-probe-backends``) and puts the answer in
``WorkerCapabilities.backends``; the scheduler matches a benchmark's
``backend``/``backend_device``/``provider`` against it.

Decisions:

* Each probe runs in a child interpreter (:func:`run_in_child`, its own
  process group, killed with everything it started after its timeout), all
  of them at once, so a hung import or browser costs the worker's start at
  most the longest timeout, and a crash is a line in ``probe_errors``, never
  a worker that does not start.
* A library that is not installed, or no Chromium on PATH, is not an error:
  the backend is simply absent (None) and no child is started for it.
* A probe's child answers with the domain model's JSON, validated here as
  any wire input would be.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from testfleet.domain.enums import HardwareKind
from testfleet.domain.hardware import BackendInfo, BrowserInfo, OnnxRuntimeInfo, OpenVinoInfo
from testfleet.worker.browser_assets import BrowserAssetsError, assets_dir, onnxruntime_web_version
from testfleet.worker.chromium import find_chromium
from testfleet.worker.probe_child import MARKER

#: Importing ONNX Runtime or OpenVINO takes about a second; a broken install may hang.
LIBRARY_PROBE_TIMEOUT_SECONDS = 15.0
#: Starting Chromium and asking it for a WebGPU adapter takes a few seconds.
BROWSER_PROBE_TIMEOUT_SECONDS = 20.0
#: Error text kept from a child's stderr (its last line says why).
_MAX_DETAIL_CHARS = 300


class ProbeFailedError(RuntimeError):
    """A probe's child hung, crashed or answered nothing usable."""


def run_in_child(
    target: str, args: list[Any], *, timeout_seconds: float, python: str | None = None
) -> Any:
    """Call ``target`` ("module:function") with ``args`` in a child interpreter
    and return its JSON answer.

    The child runs in a session of its own, so on timeout the whole group (a
    browser and its helpers included) is killed, not only the interpreter.
    """
    command = [python or sys.executable, "-P", "-m", "testfleet.worker.probe_child"]
    process = subprocess.Popen(
        [*command, target, json.dumps(args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        process.communicate()
        raise ProbeFailedError(f"did not answer within {timeout_seconds:g} s") from None
    finally:
        # The child may leave helpers behind even when it answered (a browser's).
        _kill_group(process.pid)
    for line in reversed(out.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    detail = (err.strip().splitlines() or ["no output"])[-1][-_MAX_DETAIL_CHARS:]
    raise ProbeFailedError(f"exited with code {process.returncode}: {detail}")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return  # already gone


# --------------------------------------------------------------------------- in the child


def onnxruntime_info() -> OnnxRuntimeInfo:
    """ONNX Runtime's version and execution providers (runs in the child)."""
    # import_module: Any-typed (the library ships no type information).
    onnxruntime = importlib.import_module("onnxruntime")
    return OnnxRuntimeInfo(
        version=str(onnxruntime.__version__),
        providers=[str(p) for p in onnxruntime.get_available_providers()],
    )


def openvino_info() -> OpenVinoInfo:
    """OpenVINO's version and devices with their full names (runs in the child).

    A device whose name cannot be read is still listed: it exists.
    """
    openvino = importlib.import_module("openvino")
    core = openvino.Core()
    devices = [str(d) for d in core.available_devices]
    names: dict[str, str] = {}
    for device in devices:
        try:
            names[device] = str(core.get_property(device, "FULL_DEVICE_NAME"))[:256]
        except Exception:  # a name is for people; the device is what counts
            continue
    version = str(getattr(openvino, "__version__", "") or openvino.get_version())
    return OpenVinoInfo(version=version[:64], devices=devices, device_names=names)


# --------------------------------------------------------------------------- in the worker


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def probe_onnxruntime(
    *, timeout_seconds: float = LIBRARY_PROBE_TIMEOUT_SECONDS
) -> OnnxRuntimeInfo | None:
    """ONNX Runtime as a child sees it; None when it is not installed."""
    if not _installed("onnxruntime"):
        return None
    answer = run_in_child(f"{__name__}:onnxruntime_info", [], timeout_seconds=timeout_seconds)
    return OnnxRuntimeInfo.model_validate(answer)


def probe_openvino(
    *, timeout_seconds: float = LIBRARY_PROBE_TIMEOUT_SECONDS
) -> OpenVinoInfo | None:
    """OpenVINO as a child sees it; None when it is not installed."""
    if not _installed("openvino"):
        return None
    answer = run_in_child(f"{__name__}:openvino_info", [], timeout_seconds=timeout_seconds)
    return OpenVinoInfo.model_validate(answer)


def probe_browser(
    explicit: str | None = None, *, timeout_seconds: float = BROWSER_PROBE_TIMEOUT_SECONDS
) -> BrowserInfo | None:
    """The Chromium's WebGPU, WebNN and WebAssembly support, asked in a child.

    None when there is no Chromium, or Playwright (the ``browser`` extra) is
    not installed and no browser was named; a named browser that cannot be
    used is an error.
    """
    path = find_chromium(explicit)
    if path is None:
        return None
    if not _installed("playwright"):
        if explicit is None:
            return None
        raise ProbeFailedError(
            "--browser needs the playwright package: pip install 'testfleet[browser]'"
        )
    answer = run_in_child(
        "testfleet.worker.browser_probe:browser_info",
        [str(path)],
        timeout_seconds=timeout_seconds,
    )
    return BrowserInfo.model_validate(answer).model_copy(
        update={"onnxruntime_web": _onnxruntime_web()}
    )


def _onnxruntime_web() -> str | None:
    """onnxruntime-web's version where its files are (``--browser-assets`` or the
    checkout's ``browser/``); None without them, which is not an error: the
    browser is still reported, and matching names what is missing."""
    try:
        return onnxruntime_web_version(assets_dir())
    except BrowserAssetsError:
        return None


@dataclass(frozen=True)
class BackendProbes:
    """The backend probes; tests replace one (with one that raises or hangs)."""

    onnxruntime: Callable[[], OnnxRuntimeInfo | None] = probe_onnxruntime
    openvino: Callable[[], OpenVinoInfo | None] = probe_openvino
    browser: Callable[[], BrowserInfo | None] = probe_browser


def detect_backends(probes: BackendProbes, errors: list[str]) -> BackendInfo:
    """Run every backend probe at once; a failure is a line in ``errors``
    ("onnxruntime: ...") and that backend is absent."""
    named: dict[str, Callable[[], Any]] = {
        "onnxruntime": probes.onnxruntime,
        "openvino": probes.openvino,
        "browser": probes.browser,
    }
    with ThreadPoolExecutor(max_workers=len(named), thread_name_prefix="probe") as pool:
        futures = {name: pool.submit(probe) for name, probe in named.items()}
    found: dict[str, Any] = {}
    for name, future in futures.items():
        try:
            found[name] = future.result()
        except Exception as exc:  # any failure of any probe: report it, keep starting
            errors.append(f"{name}: {type(exc).__name__}: {exc}"[:500])
            found[name] = None
    return BackendInfo(**found)


def backend_hardware(backends: BackendInfo) -> set[HardwareKind]:
    """Hardware kinds the backends add to a worker's list: openvino (a runtime
    with a device), webgpu (the browser has an adapter, software or not; its
    name says which), webnn (``navigator.ml`` exists)."""
    kinds: set[HardwareKind] = set()
    if backends.openvino is not None and backends.openvino.devices:
        kinds.add(HardwareKind.OPENVINO)
    browser = backends.browser
    if browser is not None and browser.webgpu.adapter is not None:
        kinds.add(HardwareKind.WEBGPU)
    if browser is not None and browser.webnn:
        kinds.add(HardwareKind.WEBNN)
    return kinds
