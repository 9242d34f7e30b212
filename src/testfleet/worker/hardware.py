"""What this machine really has: the worker's hardware probes.

Callers: the worker agent calls :func:`detect_capabilities` once at start-up
(in a thread: the torch probe can take seconds) and sends the result in its
``hello``; it calls :func:`sample_load` (with :func:`sample_gpu_load` for the
GPUs' utilisation and memory use) for each heartbeat, and the benchmark
runner :func:`sample_gpu_metrics` per GPU while it measures. The scheduler
then matches task requirements against what is reported here, so every fact
is measured, never assumed.

A probe must never stop a worker from starting: each one runs through
:func:`_run_probe`, which turns an exception into a line in
``WorkerCapabilities.probe_errors`` and falls back to a conservative value (no
GPUs, no torch, "unknown"). A machine that simply lacks something (no NVIDIA
driver, torch not installed) is not an error and adds no line.

Probes are plain zero-argument callables grouped in :class:`Probes`, so tests
can replace one (for example with one that raises) and check the rest still
work.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, NotRequired, TypedDict, TypeVar

import psutil

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import (
    BackendInfo,
    CpuInfo,
    GpuInfo,
    TorchInfo,
    WorkerCapabilities,
)
from testfleet.worker.backend_probes import BackendProbes, backend_hardware, detect_backends

#: Importing torch (and initialising CUDA) takes seconds; a broken install may hang.
TORCH_PROBE_TIMEOUT_SECONDS = 60.0

_GIB = 1024**3
_MIB = 1024**2
#: One probe error line stays readable in a table; the cause is at the end of a traceback anyway.
_MAX_ERROR_CHARS = 500
#: The child process prints its answer after this marker, so stray prints from
#: torch or site hooks on stdout cannot be mistaken for it.
_TORCH_MARKER = "TESTFLEET_TORCH_PROBE="

# Runs in a child interpreter: only the standard library and torch are available.
_TORCH_SCRIPT = f"""
import json
import torch

cuda = bool(torch.cuda.is_available())
mps_backend = getattr(torch.backends, "mps", None)
mps = bool(mps_backend is not None and mps_backend.is_available())
names = []
if cuda:
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
info = {{
    "version": str(torch.__version__),
    "cuda_available": cuda,
    "cuda_version": torch.version.cuda,
    "hip_version": getattr(torch.version, "hip", None),
    "mps_available": mps,
    "device_names": names,
}}
print({_TORCH_MARKER!r} + json.dumps(info), flush=True)
"""

T = TypeVar("T")


def _clip(text: str, limit: int) -> str:
    """Fit a probed string into its model field (a long hostname must not fail validation)."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(value: str | bytes) -> str:
    # nvidia-ml-py returns str; older pynvml releases returned bytes.
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


# --------------------------------------------------------------------------- CPU, memory, OS


def _cpu_model_from_proc() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                # x86 says "model name"; some ARM kernels only say "Hardware" or "Processor".
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        return None  # not Linux: fall through to the next source
    return None


def _cpu_model_from_sysctl() -> str | None:
    if sys.platform != "darwin":
        return None
    try:
        out = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def probe_cpu() -> CpuInfo:
    """CPU model, architecture and core counts.

    The model is whatever the first source that knows says (/proc/cpuinfo,
    sysctl on macOS, ``platform.processor()``); a model nobody reports is
    "unknown", not an error.
    """
    model = _cpu_model_from_proc() or _cpu_model_from_sysctl() or platform.processor() or "unknown"
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False)
    return CpuInfo(
        model=_clip(model, 256),
        architecture=_clip(platform.machine() or "unknown", 64),
        logical_cores=logical,
        physical_cores=physical or None,
    )


def _fallback_cpu() -> CpuInfo:
    # Used when probe_cpu failed; os.cpu_count cannot raise, platform.machine hardly can.
    return CpuInfo(
        architecture=_clip(platform.machine() or "unknown", 64),
        logical_cores=os.cpu_count() or 1,
    )


def probe_memory_gb() -> float:
    """Total physical memory in GiB, rounded to 0.1."""
    return round(psutil.virtual_memory().total / _GIB, 1)


def probe_os() -> str:
    return _clip(platform.platform(), 256)


def probe_hostname() -> str:
    return _clip(socket.gethostname(), 256) or "unknown"


def probe_python_version() -> str:
    return platform.python_version()


# --------------------------------------------------------------------------- NVIDIA via NVML


def _load_nvml() -> Any:
    # nvidia-ml-py is a required dependency; failing to import it is a broken
    # install, which the probe wrapper reports as an error line.
    import pynvml

    return pynvml


def _no_driver(nvml: Any, exc: BaseException) -> bool:
    """True when ``nvmlInit`` failed because this machine has no NVIDIA driver.

    That is the normal state of a CPU-only or Apple machine and means "no
    GPUs". Any other failure (driver/library version mismatch after an upgrade
    without reboot, no permission) means GPUs are probably there but unusable,
    which an operator needs to see, so it is raised as a probe error.
    """
    absent = {
        getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", 12),
        getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", 9),
    }
    return getattr(exc, "value", None) in absent


@contextlib.contextmanager
def _nvml_session(nvml: Any) -> Iterator[bool]:
    """Initialise NVML; yield False when there is no driver. Always shuts down after."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        if not _no_driver(nvml, exc):
            raise
        driver = False
    else:
        driver = True
    if not driver:
        # Yielded outside the except block, so errors in the caller's body do
        # not chain to this expected failure.
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _optional(nvml: Any, query: Callable[[], T]) -> T | None:
    """A per-GPU fact some boards do not support (NVML_ERROR_NOT_SUPPORTED): None, not a failure."""
    try:
        return query()
    except nvml.NVMLError:
        return None


def probe_nvidia_gpus(nvml: Any | None = None) -> list[GpuInfo]:
    """Every NVIDIA GPU NVML sees; an empty list where there is no driver.

    ``nvml`` is the ``pynvml`` module (injected by tests). A GPU whose name or
    memory cannot be read fails the whole probe rather than being reported with
    made-up numbers the scheduler would trust.
    """
    nvml = _load_nvml() if nvml is None else nvml
    with _nvml_session(nvml) as available:
        if not available:
            return []
        driver_raw = _optional(nvml, nvml.nvmlSystemGetDriverVersion)
        driver = _text(driver_raw) if driver_raw else None
        gpus: list[GpuInfo] = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            # partial, not a lambda: binds this loop's handle (and mypy can type it).
            capability = _optional(nvml, partial(nvml.nvmlDeviceGetCudaComputeCapability, handle))
            uuid = _optional(nvml, partial(nvml.nvmlDeviceGetUUID, handle))
            gpus.append(
                GpuInfo(
                    index=index,
                    vendor="nvidia",
                    name=_clip(_text(nvml.nvmlDeviceGetName(handle)), 256),
                    memory_gb=round(nvml.nvmlDeviceGetMemoryInfo(handle).total / _GIB, 1),
                    compute_capability=(
                        round(capability[0] + capability[1] / 10, 2) if capability else None
                    ),
                    driver_version=_clip(driver, 64) if driver else None,
                    uuid=_clip(_text(uuid), 128) if uuid else None,
                )
            )
        return gpus


# --------------------------------------------------------------------------- torch


def probe_torch(
    *, timeout_seconds: float = TORCH_PROBE_TIMEOUT_SECONDS, python: str | None = None
) -> TorchInfo | None:
    """torch's view of the accelerators, or None when torch is not installed.

    torch is imported in a child interpreter, never in the worker: the import
    takes seconds, may initialise CUDA in the worker process, and a broken
    install can hang or crash it. The child is killed after ``timeout_seconds``.
    """
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        completed = subprocess.run(
            # -P: do not put the current directory on sys.path, so a stray
            # "torch" folder where the worker was started cannot shadow torch.
            [python or sys.executable, "-P", "-c", _TORCH_SCRIPT],
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"importing torch did not finish within {timeout_seconds:g} s") from None
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(_TORCH_MARKER):
            return TorchInfo.model_validate(json.loads(line[len(_TORCH_MARKER) :]))
    detail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"torch probe exited with code {completed.returncode}: {detail}")


# --------------------------------------------------------------------------- assembly


@dataclass(frozen=True)
class Probes:
    """The probes :func:`detect_capabilities` runs; replace one in tests to simulate a failure."""

    cpu: Callable[[], CpuInfo] = probe_cpu
    memory_gb: Callable[[], float] = probe_memory_gb
    os: Callable[[], str] = probe_os
    hostname: Callable[[], str] = probe_hostname
    python_version: Callable[[], str] = probe_python_version
    nvidia_gpus: Callable[[], list[GpuInfo]] = probe_nvidia_gpus
    torch: Callable[[], TorchInfo | None] = probe_torch


def _run_probe(name: str, probe: Callable[[], T], fallback: T, errors: list[str]) -> T:
    try:
        return probe()
    except Exception as exc:  # any failure of any probe: report it, keep starting
        errors.append(_clip(f"{name}: {type(exc).__name__}: {exc}", _MAX_ERROR_CHARS))
        return fallback


def derive_hardware(
    gpus: list[GpuInfo], torch: TorchInfo | None, backends: BackendInfo | None = None
) -> list[HardwareKind]:
    """The hardware kinds a worker offers, in HardwareKind declaration order (cpu first).

    cuda: NVML found an NVIDIA GPU, or torch has CUDA that is not ROCm's HIP
    (a ROCm build of torch answers ``cuda.is_available()`` for AMD GPUs).
    openvino, webgpu, webnn: what the backend probes found
    (:func:`~testfleet.worker.backend_probes.backend_hardware`).
    """
    kinds = {HardwareKind.CPU}
    if backends is not None:
        kinds |= backend_hardware(backends)
    if any(gpu.vendor == "nvidia" for gpu in gpus):
        kinds.add(HardwareKind.CUDA)
    if torch is not None and torch.cuda_available:
        kinds.add(HardwareKind.ROCM if torch.hip_version else HardwareKind.CUDA)
    if torch is not None and torch.mps_available:
        kinds.add(HardwareKind.MPS)
    return [kind for kind in HardwareKind if kind in kinds]


def detect_capabilities(
    *,
    tags: dict[str, str],
    task_types: list[TaskType],
    probe_torch: bool = True,
    probes: Probes | None = None,
    backend_probes: BackendProbes | None = None,
) -> WorkerCapabilities:
    """Probe this machine. Never raises for a probe failure (see ``probe_errors``).

    Blocking (the torch probe runs a child process for up to a minute, the
    backend probes children for up to their timeouts): call it from a thread
    in async code. ``probe_torch=False`` skips torch entirely; the benchmark
    backends (ONNX Runtime, OpenVINO, a Chromium) are probed only when
    ``backend_probes`` is given (``testfleet worker`` does unless
    ``--no-probe-backends``; a browser start per worker is too dear for a
    demo's or a test fleet's workers that run no such benchmark).
    """
    probes = probes or Probes()
    errors: list[str] = []
    gpus = _run_probe("nvidia_gpus", probes.nvidia_gpus, list[GpuInfo](), errors)
    torch = _run_probe("torch", probes.torch, None, errors) if probe_torch else None
    backends = BackendInfo() if backend_probes is None else detect_backends(backend_probes, errors)
    return WorkerCapabilities(
        hostname=_run_probe("hostname", probes.hostname, "unknown", errors),
        os=_run_probe("os", probes.os, "unknown", errors),
        python_version=_run_probe("python_version", probes.python_version, "unknown", errors),
        cpu=_run_probe("cpu", probes.cpu, _fallback_cpu(), errors),
        memory_gb=_run_probe("memory", probes.memory_gb, 0.0, errors),
        gpus=gpus,
        torch=torch,
        hardware=derive_hardware(gpus, torch, backends),
        task_types=list(task_types),
        tags=dict(tags),
        probe_errors=[_clip(e, _MAX_ERROR_CHARS) for e in errors][:32],
        backends=backends,
    )


# --------------------------------------------------------------------------- live samples


class LoadSample(TypedDict):
    """Machine load for a heartbeat; the fields of ``protocol.messages.WorkerLoad``."""

    cpu_percent: float
    memory_percent: float
    load_average_1m: float | None
    #: Only where NVML reads the machine's GPUs (see :func:`sample_gpu_load`).
    gpu_utilization_percent: NotRequired[float]
    gpu_memory_percent: NotRequired[float]


def sample_load(gpu_load: Callable[[], GpuLoad | None] | None = None) -> LoadSample:
    """CPU, memory and (where NVML reads them) GPU load now. Cheap and never
    raises (a heartbeat must go out).

    ``cpu_percent`` is psutil's non-blocking reading: the average since the
    previous call, so the first call of a process returns 0.0. ``gpu_load``
    is injected by tests; by default :func:`sample_gpu_load`.
    """
    cpu = memory = 0.0
    load: float | None = None
    with contextlib.suppress(Exception):
        cpu = max(0.0, float(psutil.cpu_percent(interval=None)))
    with contextlib.suppress(Exception):
        memory = min(100.0, max(0.0, float(psutil.virtual_memory().percent)))
    if hasattr(os, "getloadavg"):  # not on Windows
        with contextlib.suppress(OSError):
            load = max(0.0, os.getloadavg()[0])
    sample: LoadSample = {"cpu_percent": cpu, "memory_percent": memory, "load_average_1m": load}
    gpus = (gpu_load or sample_gpu_load)()
    if gpus is not None:
        sample["gpu_utilization_percent"] = gpus.utilization_percent
        sample["gpu_memory_percent"] = gpus.memory_percent
    return sample


@dataclass(frozen=True, slots=True)
class GpuLoad:
    """The machine's GPUs as one heartbeat figure each (the workers page's sparklines)."""

    #: Mean of the GPUs' utilisation, 0-100.
    utilization_percent: float
    #: Memory used over all GPUs, percent of their total memory, 0-100.
    memory_percent: float


def sample_gpu_load(nvml: Any | None = None) -> GpuLoad | None:
    """Utilisation and memory use over every NVIDIA GPU NVML reads; None where
    there is none (no driver, a CPU or Apple machine) or a figure cannot be
    read. Never raises: a heartbeat must go out. Values are clamped to 0-100
    so a driver's odd reading cannot make the heartbeat invalid."""
    try:
        nvml = _load_nvml() if nvml is None else nvml
        with _nvml_session(nvml) as available:
            if not available:
                return None
            utilisation: list[float] = []
            used = total = 0
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                utilisation.append(float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                used += int(memory.used)
                total += int(memory.total)
            if not utilisation or total <= 0:
                return None
            return GpuLoad(
                utilization_percent=_percent(sum(utilisation) / len(utilisation)),
                memory_percent=_percent(100.0 * used / total),
            )
    except Exception:
        # Best effort, as sample_gpu_metrics: a broken driver shows in probe_errors.
        return None


def _percent(value: float) -> float:
    return round(min(100.0, max(0.0, value)), 1) if math.isfinite(value) else 0.0


def sample_gpu_metrics(nvml: Any | None = None) -> list[dict[str, Any]]:
    """Per-GPU utilisation, memory in use and power now; [] without a driver. Never raises.

    A figure a board does not support (power on some models) is None. NVML is
    initialised per call: heartbeats are seconds apart, and holding it open
    would tie the worker to a driver that may be reloaded under it.
    """
    try:
        nvml = _load_nvml() if nvml is None else nvml
        with _nvml_session(nvml) as available:
            if not available:
                return []
            samples: list[dict[str, Any]] = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                util = _optional(nvml, partial(nvml.nvmlDeviceGetUtilizationRates, handle))
                memory = _optional(nvml, partial(nvml.nvmlDeviceGetMemoryInfo, handle))
                power_mw = _optional(nvml, partial(nvml.nvmlDeviceGetPowerUsage, handle))
                samples.append(
                    {
                        "index": index,
                        "gpu_utilization_percent": float(util.gpu) if util else None,
                        "memory_used_mb": round(memory.used / _MIB, 1) if memory else None,
                        "power_watts": round(power_mw / 1000, 1) if power_mw is not None else None,
                    }
                )
            return samples
    except Exception:
        # Metrics are best effort; a driver problem already shows in probe_errors.
        return []
