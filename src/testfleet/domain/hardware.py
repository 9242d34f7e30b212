"""What a worker really has, as it reports it in its ``hello`` message.

Callers: ``worker.hardware`` fills these from the machine (CPU, memory, NVML,
torch, and through ``worker.backend_probes`` the benchmark backends: ONNX
Runtime, OpenVINO, a Chromium); the scheduler reads them to match
requirements; the store keeps them in ``worker_nodes.capabilities``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.resources import WorkerResources


class _Info(BaseModel):
    # No inf or nan: they cannot be stored (see testfleet.domain.json_values).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CpuInfo(_Info):
    model: str = Field(default="unknown", max_length=256)
    architecture: str = Field(default="unknown", max_length=64)
    logical_cores: int = Field(default=1, ge=1, le=65536)
    physical_cores: int | None = Field(default=None, ge=1, le=65536)


class GpuInfo(_Info):
    index: int = Field(ge=0, le=4096)
    vendor: str = Field(max_length=64)
    name: str = Field(max_length=256)
    memory_gb: float = Field(ge=0)
    compute_capability: float | None = Field(default=None, ge=0)
    driver_version: str | None = Field(default=None, max_length=64)
    uuid: str | None = Field(default=None, max_length=128)


class TorchInfo(_Info):
    version: str = Field(max_length=64)
    cuda_available: bool = False
    cuda_version: str | None = Field(default=None, max_length=64)
    hip_version: str | None = Field(default=None, max_length=64)
    mps_available: bool = False
    device_names: list[str] = Field(default_factory=list, max_length=64)


#: A provider, device or feature name: short by nature; bounded so that the
#: hello frame stays small whatever a probe reads.
_Name = Annotated[str, StringConstraints(max_length=128)]


class OnnxRuntimeInfo(_Info):
    """ONNX Runtime as the worker's Python imports it (a child process asked it)."""

    version: str = Field(max_length=64)
    #: ``onnxruntime.get_available_providers()``, e.g. ["CPUExecutionProvider"].
    providers: list[_Name] = Field(default_factory=list, max_length=32)


class OpenVinoInfo(_Info):
    """OpenVINO's runtime: its version and the devices ``Core().available_devices`` lists."""

    version: str = Field(max_length=64)
    #: Device names a task's ``backend_device`` may name: "CPU", "GPU.0", "NPU".
    devices: list[_Name] = Field(default_factory=list, max_length=32)
    #: Each device's ``FULL_DEVICE_NAME`` (for people; matching uses ``devices``).
    device_names: dict[_Name, Annotated[str, StringConstraints(max_length=256)]] = Field(
        default_factory=dict, max_length=32
    )

    def offers(self, device: str) -> bool:
        """Whether a task asking ``device`` can compile here: an exact name, a
        family ("GPU" for "GPU.0"), or a virtual device over what exists
        ("AUTO", "MULTI", "HETERO" need at least one real device)."""
        wanted = device.strip().upper()
        if wanted in {"AUTO", "MULTI", "HETERO"} or wanted.startswith(("AUTO:", "MULTI:")):
            return bool(self.devices)
        return any(d.upper() == wanted or d.upper().split(".")[0] == wanted for d in self.devices)


class WebGpuInfo(_Info):
    """What ``navigator.gpu.requestAdapter()`` gave inside the worker's Chromium."""

    #: "vendor architecture description" of the adapter; None: no adapter.
    adapter: str | None = Field(default=None, max_length=256)
    features: list[_Name] = Field(default_factory=list, max_length=64)


class WasmInfo(_Info):
    """WebAssembly features the page could use (``WebAssembly.validate`` on tiny modules)."""

    simd: bool = False
    #: Threads need SharedArrayBuffer, which needs a cross-origin isolated page.
    threads: bool = False


class BrowserInfo(_Info):
    """A Chromium the worker can run browser benchmarks in, and what it offers headless."""

    path: str = Field(max_length=1024)
    version: str = Field(max_length=64)
    webgpu: WebGpuInfo = Field(default_factory=WebGpuInfo)
    #: ``'ml' in navigator`` (WebNN's entry point).
    webnn: bool = False
    wasm: WasmInfo = Field(default_factory=WasmInfo)
    #: onnxruntime-web's version where the worker has its files
    #: (``--browser-assets``); None: it cannot run browser benchmarks yet.
    onnxruntime_web: str | None = Field(default=None, max_length=64)


class BackendInfo(_Info):
    """The benchmark backends besides torch that this worker can run; None: not there."""

    onnxruntime: OnnxRuntimeInfo | None = None
    openvino: OpenVinoInfo | None = None
    browser: BrowserInfo | None = None


class WorkerCapabilities(_Info):
    """Everything the scheduler may match on, plus what helps people read results."""

    hostname: str = Field(max_length=256)
    os: str = Field(max_length=256)
    python_version: str = Field(max_length=64)
    cpu: CpuInfo = Field(default_factory=CpuInfo)
    memory_gb: float = Field(default=0.0, ge=0)
    gpus: list[GpuInfo] = Field(default_factory=list, max_length=64)
    torch: TorchInfo | None = None
    hardware: list[HardwareKind] = Field(default_factory=lambda: [HardwareKind.CPU])
    task_types: list[TaskType] = Field(default_factory=list)
    #: Task types this worker could run but its operator does not allow
    #: (``testfleet worker --allow-types``): never in ``task_types``; listed so an
    #: unschedulable reason can say the work was refused, not missing.
    refused_task_types: list[TaskType] = Field(default_factory=list, max_length=16)
    tags: dict[str, str] = Field(default_factory=dict, max_length=64)
    probe_errors: list[str] = Field(default_factory=list, max_length=32)
    #: What tasks may reserve here and how limits are enforced; None (a worker
    #: from before resource limits): its memory_gb and logical cores, disk unbounded.
    resources: WorkerResources | None = None
    #: ONNX Runtime, OpenVINO and a browser where detected (issue 15); empty
    #: for a worker from before, which then runs torch benchmarks only.
    backends: BackendInfo = Field(default_factory=BackendInfo)

    @property
    def max_cuda_compute(self) -> float | None:
        values = [g.compute_capability for g in self.gpus if g.compute_capability is not None]
        return max(values) if values else None

    @property
    def max_gpu_memory_gb(self) -> float:
        return max((g.memory_gb for g in self.gpus), default=0.0)
