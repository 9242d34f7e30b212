"""What a worker really has, as it reports it in its ``hello`` message.

Callers: ``worker.hardware`` fills these from the machine (CPU, memory, NVML,
torch); the scheduler reads them to match requirements; the store keeps them in
``worker_nodes.capabilities``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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

    @property
    def max_cuda_compute(self) -> float | None:
        values = [g.compute_capability for g in self.gpus if g.compute_capability is not None]
        return max(values) if values else None

    @property
    def max_gpu_memory_gb(self) -> float:
        return max((g.memory_gb for g in self.gpus), default=0.0)
