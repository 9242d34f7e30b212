"""Which hardware kind a benchmark runs on (pure; the executor's side, no torch).

Callers: :class:`~testfleet.worker.executors.benchmark.BenchmarkExecutor`
picks the kind before starting the runner; the runner then checks with torch
itself whether that kind really is available (it is the authority: a probe
result may be stale or missing).

Rule, in order:

1. ``config.device`` pins the kind.
2. No ``requirements.hardware``: the CPU.
3. The first kind in ``requirements.hardware`` that this worker's torch can use
   (cpu always; cuda when torch has CUDA and is not a ROCm build; rocm when it
   is one; mps when the MPS backend is available).
4. None of them usable: the first required kind anyway, so that the run fails
   with a classified error (device not available: ``infrastructure``; a kind
   the runner has no backend for, such as openvino: ``invalid_config``) rather
   than quietly measuring the CPU for a task that asked for a GPU.

Only when the choice depends on it (several kinds required, the first not the
CPU) does the executor need to know what torch can use; that costs a torch
probe (a child process, seconds), which the executor runs once and keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

from testfleet.domain.benchmark import BenchmarkBackend, BenchmarkConfig
from testfleet.domain.enums import HardwareKind
from testfleet.domain.hardware import TorchInfo

#: The kinds the runner can drive through torch.
TORCH_KINDS = frozenset({HardwareKind.CPU, HardwareKind.CUDA, HardwareKind.ROCM, HardwareKind.MPS})


def usable_hardware(torch: TorchInfo | None) -> frozenset[HardwareKind]:
    """The kinds a worker's torch can run on, from the torch probe's answer."""
    kinds = {HardwareKind.CPU}
    if torch is not None:
        if torch.cuda_available:
            kinds.add(HardwareKind.ROCM if torch.hip_version else HardwareKind.CUDA)
        if torch.mps_available:
            kinds.add(HardwareKind.MPS)
    return frozenset(kinds)


def needs_probe(pinned: HardwareKind | None, required: Sequence[HardwareKind]) -> bool:
    """Whether :func:`choose_hardware` would read ``usable`` for these inputs."""
    return pinned is None and len(required) > 1 and required[0] is not HardwareKind.CPU


def choose_hardware(
    pinned: HardwareKind | None,
    required: Sequence[HardwareKind],
    usable: frozenset[HardwareKind],
) -> HardwareKind:
    """The kind to run on, by the rule in the module docstring."""
    if pinned is not None:
        return pinned
    if not required:
        return HardwareKind.CPU
    for kind in required:
        if kind in usable:
            return kind
    return required[0]


def unsupported_reason(kind: HardwareKind) -> str | None:
    """Why the runner cannot run on ``kind`` at all, or None when it can try."""
    if kind in TORCH_KINDS:
        return None
    supported = ", ".join(sorted(k.value for k in TORCH_KINDS))
    return f"model benchmarks run through torch on {supported}; there is no {kind.value} backend"


#: ONNX Runtime providers that run on a GPU kind; any other runs on the CPU's
#: (CPUExecutionProvider) or is its own kind (OpenVINOExecutionProvider).
_PROVIDER_HARDWARE = {
    "CUDAExecutionProvider": HardwareKind.CUDA,
    "TensorrtExecutionProvider": HardwareKind.CUDA,
    "ROCMExecutionProvider": HardwareKind.ROCM,
    "MIGraphXExecutionProvider": HardwareKind.ROCM,
    "CoreMLExecutionProvider": HardwareKind.MPS,
    "OpenVINOExecutionProvider": HardwareKind.OPENVINO,
    "QNNExecutionProvider": HardwareKind.QNN,
}


def backend_hardware(config: BenchmarkConfig) -> HardwareKind | None:
    """The hardware kind a non-torch backend's run is recorded under (issue 15),
    or None for torch (chosen by :func:`choose_hardware`).

    ONNX Runtime: its provider's kind (CUDA's is cuda, the CPU's cpu); OpenVINO:
    ``openvino`` whatever its device (the device is in ``device``, e.g.
    ``openvino:GPU``); the browser: ``webgpu`` on WebGPU, else the CPU (wasm).
    """
    backend = config.backend
    if backend is BenchmarkBackend.TORCH:
        return None
    if backend is BenchmarkBackend.ONNXRUNTIME:
        return _PROVIDER_HARDWARE.get(config.onnx_provider, HardwareKind.CPU)
    if backend is BenchmarkBackend.OPENVINO:
        return HardwareKind.OPENVINO
    return HardwareKind.WEBGPU if config.resolved_backend_device == "webgpu" else HardwareKind.CPU
