"""Benchmarks go only where torch can drive the hardware they need."""

from __future__ import annotations

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import GpuInfo, TorchInfo, WorkerCapabilities
from testfleet.domain.task import Requirements
from testfleet.scheduling.matching import offered_hardware, unmet_requirement

H100 = GpuInfo(index=0, vendor="nvidia", name="NVIDIA H100", memory_gb=80, compute_capability=9.0)
CUDA = Requirements(hardware=[HardwareKind.CUDA])


def gpu_box(torch: TorchInfo | None) -> WorkerCapabilities:
    return WorkerCapabilities(
        hostname="gpu",
        os="Linux",
        python_version="3.12",
        gpus=[H100],
        torch=torch,
        hardware=[HardwareKind.CPU, HardwareKind.CUDA],
        task_types=[TaskType.COMMAND, TaskType.BENCHMARK],
    )


def test_a_gpu_torch_cannot_use_attracts_commands_but_not_benchmarks() -> None:
    cpu_only_torch = gpu_box(TorchInfo(version="2.13.0+cpu", cuda_available=False))
    assert unmet_requirement(TaskType.COMMAND, CUDA, cpu_only_torch) is None
    reason = unmet_requirement(TaskType.BENCHMARK, CUDA, cpu_only_torch)
    assert reason == "hardware: needs one of [cuda], worker offers [cpu] (to torch, for benchmarks)"
    assert offered_hardware(TaskType.BENCHMARK, cpu_only_torch) == [HardwareKind.CPU]


def test_torch_with_cuda_takes_cuda_benchmarks() -> None:
    caps = gpu_box(TorchInfo(version="2.13.0+cu130", cuda_available=True, cuda_version="13.0"))
    assert unmet_requirement(TaskType.BENCHMARK, CUDA, caps) is None


def test_a_worker_whose_torch_was_not_probed_offers_benchmarks_the_cpu_only() -> None:
    caps = gpu_box(None)
    assert offered_hardware(TaskType.BENCHMARK, caps) == [HardwareKind.CPU]
    assert unmet_requirement(TaskType.BENCHMARK, Requirements(), caps) is None


def test_hip_builds_offer_rocm_and_mps_is_offered_when_torch_sees_it() -> None:
    rocm = WorkerCapabilities(
        hostname="mi300",
        os="Linux",
        python_version="3.12",
        torch=TorchInfo(version="2.13.0+rocm7", cuda_available=True, hip_version="7.0"),
        hardware=[HardwareKind.CPU, HardwareKind.ROCM],
        task_types=[TaskType.BENCHMARK],
    )
    assert offered_hardware(TaskType.BENCHMARK, rocm) == [HardwareKind.CPU, HardwareKind.ROCM]
    mac = WorkerCapabilities(
        hostname="mac",
        os="Darwin",
        python_version="3.12",
        torch=TorchInfo(version="2.13.0", mps_available=True),
        hardware=[HardwareKind.CPU, HardwareKind.MPS],
        task_types=[TaskType.BENCHMARK],
    )
    assert offered_hardware(TaskType.BENCHMARK, mac) == [HardwareKind.CPU, HardwareKind.MPS]
