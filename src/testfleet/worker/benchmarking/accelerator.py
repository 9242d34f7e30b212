"""One torch device as the runner uses it: availability, name, sync, peak memory.

Callers: the runner opens the device the executor chose with
:func:`open_device` before building the model (a missing device fails fast,
before seconds of model building), then uses the :class:`Accelerator` around
every batch size.

* Availability is torch's answer in this process: ``cuda`` needs CUDA and a
  build that is not ROCm; ``rocm`` needs a ROCm (HIP) build with a GPU (torch
  calls it ``cuda`` too); ``mps`` needs the MPS backend. Missing:
  ``infrastructure`` (the worker advertised what it cannot run). A kind with no
  torch backend at all (openvino, webgpu...): ``invalid_config``.
* ``synchronize`` waits for the device's queued work, so a timer read after it
  measures the work and not only its launch.
* Peak memory: the CUDA caching allocator's ``max_memory_allocated`` since
  :meth:`Accelerator.reset_peak` (tensors only, not the allocator's cache or
  the CUDA context); on MPS the driver's allocation after the run; on the CPU
  the peak resident memory of the runner sampled during the run.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from testfleet.domain.enums import ErrorClass, HardwareKind
from testfleet.worker.benchmarking.devices import unsupported_reason
from testfleet.worker.benchmarking.errors import BenchmarkError

if TYPE_CHECKING:
    import torch

_MIB = 1024**2


def _no_sync() -> None:
    return None


@dataclass
class Accelerator:
    hardware: HardwareKind
    device: torch.device
    name: str
    synchronize: Callable[[], None]
    #: How ``peak_memory_mb`` measures, for the conditions.
    memory_metric: str

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def reset_peak(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mb(self, sampled_rss_mb: float | None) -> float:
        import torch

        if self.is_cuda:
            return torch.cuda.max_memory_allocated(self.device) / _MIB
        if self.device.type == "mps":
            return float(torch.mps.driver_allocated_memory()) / _MIB
        return sampled_rss_mb or 0.0

    def release_memory(self) -> None:
        """After an out-of-memory: drop garbage and hand cached blocks back to the driver."""
        import torch

        gc.collect()
        if self.is_cuda:
            torch.cuda.empty_cache()
        elif self.device.type == "mps":
            torch.mps.empty_cache()


def cpu_name() -> str:
    from testfleet.worker.hardware import probe_cpu

    try:
        return probe_cpu().model
    except Exception:  # a name is for people; never fail a run over it
        return "unknown CPU"


def open_device(hardware: HardwareKind) -> Accelerator:
    """The device for ``hardware``, or a classified :class:`BenchmarkError`."""
    reason = unsupported_reason(hardware)
    if reason is not None:
        raise BenchmarkError(ErrorClass.INVALID_CONFIG, reason)
    import torch

    if hardware is HardwareKind.CPU:
        return Accelerator(
            hardware, torch.device("cpu"), cpu_name(), _no_sync, "peak process RSS (sampled)"
        )
    if hardware in (HardwareKind.CUDA, HardwareKind.ROCM):
        return _open_cuda(hardware)
    # MPS (the only kind left that unsupported_reason lets through).
    backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_available():
        raise BenchmarkError(
            ErrorClass.INFRASTRUCTURE, "mps requested but torch.backends.mps is not available"
        )
    return Accelerator(
        hardware,
        torch.device("mps"),
        "Apple MPS",
        torch.mps.synchronize,
        "MPS driver-allocated memory after the run",
    )


def _open_cuda(hardware: HardwareKind) -> Accelerator:
    import torch

    hip = getattr(torch.version, "hip", None)
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
        raise BenchmarkError(
            ErrorClass.INFRASTRUCTURE,
            f"{hardware.value} requested but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, {f'HIP {hip}' if hip else build})",
        )
    if hardware is HardwareKind.CUDA and hip:
        raise BenchmarkError(
            ErrorClass.INFRASTRUCTURE,
            f"cuda requested but this torch is a ROCm build (HIP {hip}); ask for rocm",
        )
    if hardware is HardwareKind.ROCM and not hip:
        raise BenchmarkError(
            ErrorClass.INFRASTRUCTURE,
            "rocm requested but this torch is a CUDA build, not a ROCm one",
        )
    device = torch.device("cuda", torch.cuda.current_device())

    def synchronize() -> None:
        torch.cuda.synchronize(device)

    return Accelerator(
        hardware,
        device,
        torch.cuda.get_device_name(device),
        synchronize,
        "torch.cuda.max_memory_allocated (tensors, not the allocator cache or context)",
    )
