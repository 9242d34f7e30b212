"""worker.hardware: real probes on this machine, injected failures, fake NVML and a fake torch."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import socket
import textwrap
from pathlib import Path
from typing import Any

import pynvml
import pytest

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import CpuInfo, GpuInfo, TorchInfo
from testfleet.protocol.messages import WorkerLoad
from testfleet.worker.hardware import (
    GpuLoad,
    Probes,
    derive_hardware,
    detect_capabilities,
    probe_nvidia_gpus,
    probe_torch,
    sample_gpu_load,
    sample_gpu_metrics,
    sample_load,
)

GIB = 1024**3


def _nvml_has_driver() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


TORCH_INSTALLED = importlib.util.find_spec("torch") is not None
NVML_DRIVER = _nvml_has_driver()


# --------------------------------------------------------------------------- real machine


def test_real_probes_report_this_machine() -> None:
    caps = detect_capabilities(
        tags={"pool": "ci"}, task_types=[TaskType.COMMAND, TaskType.SIMULATED]
    )

    assert caps.probe_errors == []
    assert caps.cpu.logical_cores == os.cpu_count()
    assert caps.cpu.architecture == platform.machine()
    assert caps.cpu.model != ""
    assert caps.memory_gb > 0
    assert caps.hostname == socket.gethostname()
    assert caps.python_version == platform.python_version()
    assert caps.os == platform.platform()
    assert caps.tags == {"pool": "ci"}
    assert caps.task_types == [TaskType.COMMAND, TaskType.SIMULATED]
    assert caps.hardware[0] is HardwareKind.CPU
    if not NVML_DRIVER:
        assert caps.gpus == []
    if TORCH_INSTALLED:
        assert caps.torch is not None
        assert caps.torch.version == importlib.metadata.version("torch")
    else:
        assert caps.torch is None
    if not NVML_DRIVER and not TORCH_INSTALLED:
        assert caps.hardware == [HardwareKind.CPU]


@pytest.mark.skipif(NVML_DRIVER, reason="this machine has an NVIDIA driver")
def test_no_driver_means_no_gpus_and_no_error_line() -> None:
    assert probe_nvidia_gpus() == []
    assert sample_gpu_metrics() == []


def test_sample_load_fits_the_heartbeat_message() -> None:
    sample = sample_load()
    required = {"cpu_percent", "memory_percent", "load_average_1m"}
    gpu = {"gpu_utilization_percent", "gpu_memory_percent"}
    assert set(sample) == (required | gpu if NVML_DRIVER else required)
    assert sample["cpu_percent"] >= 0
    assert 0 < sample["memory_percent"] <= 100
    if hasattr(os, "getloadavg"):
        assert sample["load_average_1m"] is not None
    WorkerLoad(**sample, running=0)  # the agent passes it straight through


# --------------------------------------------------------------------------- injected failures


def _boom() -> Any:
    raise RuntimeError("probe exploded")


def test_a_failing_probe_becomes_an_error_line_not_a_crash() -> None:
    caps = detect_capabilities(
        tags={}, task_types=[TaskType.COMMAND], probes=Probes(cpu=_boom, torch=lambda: None)
    )

    assert caps.probe_errors == ["cpu: RuntimeError: probe exploded"]
    # The fallback still tells the truth about what is cheap to know.
    assert caps.cpu.logical_cores == os.cpu_count()
    assert caps.cpu.model == "unknown"
    assert caps.memory_gb > 0
    assert caps.hardware[0] is HardwareKind.CPU


def test_every_probe_failing_still_yields_capabilities() -> None:
    probes = Probes(
        cpu=_boom,
        memory_gb=_boom,
        os=_boom,
        hostname=_boom,
        python_version=_boom,
        nvidia_gpus=_boom,
        torch=_boom,
    )
    caps = detect_capabilities(tags={}, task_types=[], probes=probes)

    names = [line.split(":")[0] for line in caps.probe_errors]
    assert sorted(names) == sorted(
        ["cpu", "memory", "os", "hostname", "python_version", "nvidia_gpus", "torch"]
    )
    assert caps.hostname == "unknown"
    assert caps.memory_gb == 0.0
    assert caps.gpus == []
    assert caps.torch is None
    assert caps.hardware == [HardwareKind.CPU]


def test_long_error_messages_are_clipped() -> None:
    def huge() -> float:
        raise ValueError("x" * 10_000)

    caps = detect_capabilities(
        tags={}, task_types=[], probe_torch=False, probes=Probes(memory_gb=huge)
    )
    assert len(caps.probe_errors) == 1
    assert len(caps.probe_errors[0]) <= 500


def test_probe_torch_false_does_not_run_the_torch_probe() -> None:
    caps = detect_capabilities(
        tags={}, task_types=[], probe_torch=False, probes=Probes(torch=_boom)
    )
    assert caps.torch is None
    assert caps.probe_errors == []


def test_probe_results_drive_the_hardware_list() -> None:
    gpu = GpuInfo(index=0, vendor="nvidia", name="H200", memory_gb=139.8, compute_capability=9.0)
    torch = TorchInfo(version="2.9.0", cuda_available=True, cuda_version="12.8")
    caps = detect_capabilities(
        tags={},
        task_types=[],
        probes=Probes(
            cpu=lambda: CpuInfo(model="m", architecture="x86_64", logical_cores=4),
            nvidia_gpus=lambda: [gpu],
            torch=lambda: torch,
        ),
    )
    assert caps.hardware == [HardwareKind.CPU, HardwareKind.CUDA]
    assert caps.gpus == [gpu]
    assert caps.torch == torch
    assert caps.max_cuda_compute == 9.0


# --------------------------------------------------------------------------- derive_hardware


def _torch(**kwargs: Any) -> TorchInfo:
    return TorchInfo(version="2.9.0", **kwargs)


@pytest.mark.parametrize(
    ("gpus", "torch", "expected"),
    [
        ([], None, ["cpu"]),
        ([GpuInfo(index=0, vendor="nvidia", name="T4", memory_gb=15)], None, ["cpu", "cuda"]),
        ([], _torch(cuda_available=True, cuda_version="12.1"), ["cpu", "cuda"]),
        ([], _torch(cuda_available=True, hip_version="6.2"), ["cpu", "rocm"]),
        ([], _torch(cuda_available=False, hip_version="6.2"), ["cpu"]),
        ([], _torch(mps_available=True), ["cpu", "mps"]),
        (
            [GpuInfo(index=0, vendor="nvidia", name="T4", memory_gb=15)],
            _torch(cuda_available=True, cuda_version="12.1", mps_available=True),
            ["cpu", "cuda", "mps"],
        ),
    ],
)
def test_derive_hardware(gpus: list[GpuInfo], torch: TorchInfo | None, expected: list[str]) -> None:
    assert derive_hardware(gpus, torch) == [HardwareKind(kind) for kind in expected]


# --------------------------------------------------------------------------- fake NVML


class _Memory:
    def __init__(self, total: int, used: int) -> None:
        self.total = total
        self.used = used


class _Util:
    def __init__(self, gpu: int) -> None:
        self.gpu = gpu


class FakeNvml:
    """Just enough of pynvml, raising pynvml's real error classes."""

    NVMLError = pynvml.NVMLError
    NVML_ERROR_LIBRARY_NOT_FOUND = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED

    def __init__(self, init_error: int | None = None, broken_name: bool = False) -> None:
        self.init_error = init_error
        self.broken_name = broken_name
        self.initialised = 0
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "560.35.03"

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        if self.broken_name:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return "NVIDIA H200" if handle == 0 else b"NVIDIA A10G"  # old pynvml gave bytes

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Memory:
        return (
            _Memory(total=int(141 * GIB), used=2048 * 1024**2)
            if handle == 0
            else _Memory(total=int(22.5 * GIB), used=0)
        )

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        if handle == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return (9, 0)

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle:04d}"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Util:
        return _Util(gpu=95 if handle == 0 else 0)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if handle == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 180_500  # milliwatts


def test_nvml_gpus_are_reported_with_their_facts() -> None:
    nvml = FakeNvml()
    gpus = probe_nvidia_gpus(nvml)

    assert [g.name for g in gpus] == ["NVIDIA H200", "NVIDIA A10G"]
    assert gpus[0] == GpuInfo(
        index=0,
        vendor="nvidia",
        name="NVIDIA H200",
        memory_gb=141.0,
        compute_capability=9.0,
        driver_version="560.35.03",
        uuid="GPU-0000",
    )
    assert gpus[1].memory_gb == 22.5
    assert gpus[1].compute_capability is None  # not supported: unknown, not a failure
    assert nvml.shutdowns == nvml.initialised == 1


def test_compute_capability_is_major_plus_minor_tenths() -> None:
    nvml = FakeNvml()
    nvml.nvmlDeviceGetCudaComputeCapability = lambda handle: (8, 6)  # type: ignore[method-assign]
    assert probe_nvidia_gpus(nvml)[0].compute_capability == 8.6


@pytest.mark.parametrize(
    "code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED]
)
def test_no_driver_is_not_an_error(code: int) -> None:
    nvml = FakeNvml(init_error=code)
    caps = detect_capabilities(
        tags={},
        task_types=[],
        probe_torch=False,
        probes=Probes(nvidia_gpus=lambda: probe_nvidia_gpus(nvml)),
    )
    assert caps.gpus == []
    assert caps.probe_errors == []
    assert nvml.shutdowns == 0  # nothing was initialised


def test_a_broken_driver_is_an_error_line() -> None:
    nvml = FakeNvml(init_error=pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)
    caps = detect_capabilities(
        tags={},
        task_types=[],
        probe_torch=False,
        probes=Probes(nvidia_gpus=lambda: probe_nvidia_gpus(nvml)),
    )
    assert caps.gpus == []
    assert len(caps.probe_errors) == 1
    assert caps.probe_errors[0].startswith("nvidia_gpus: NVMLError_LibRmVersionMismatch")


def test_a_gpu_that_cannot_be_read_fails_the_probe_and_still_shuts_nvml_down() -> None:
    nvml = FakeNvml(broken_name=True)
    caps = detect_capabilities(
        tags={},
        task_types=[],
        probe_torch=False,
        probes=Probes(nvidia_gpus=lambda: probe_nvidia_gpus(nvml)),
    )
    assert caps.gpus == []
    assert caps.probe_errors[0].startswith("nvidia_gpus: NVMLError_GpuIsLost")
    assert nvml.shutdowns == 1


def test_gpu_metrics_from_nvml() -> None:
    nvml = FakeNvml()
    metrics = sample_gpu_metrics(nvml)
    assert metrics == [
        {
            "index": 0,
            "gpu_utilization_percent": 95.0,
            "memory_used_mb": 2048.0,
            "power_watts": 180.5,
        },
        {"index": 1, "gpu_utilization_percent": 0.0, "memory_used_mb": 0.0, "power_watts": None},
    ]
    assert nvml.shutdowns == 1


def test_gpu_metrics_never_raise() -> None:
    assert sample_gpu_metrics(FakeNvml(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)) == []
    assert sample_gpu_metrics(FakeNvml(init_error=pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)) == []


# --------------------------------------------------------------------------- torch in a child


def _install_fake_torch(root: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """A package called torch, visible to find_spec here and to the child interpreter."""
    package = root / "torch"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", str(root))


def test_torch_absent_means_none_and_no_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def without_torch(name: str, *args: object) -> object:
        return None if name == "torch" else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_torch)
    assert probe_torch() is None
    caps = detect_capabilities(tags={}, task_types=[])
    assert caps.torch is None
    assert caps.probe_errors == []


# The fake package goes first on PYTHONPATH, ahead of site-packages, so it
# shadows a real torch in the child interpreter as well.
def test_torch_probe_reads_torch_in_a_child_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake_torch(
        tmp_path,
        monkeypatch,
        """
        import os, sys
        print("noise from torch import on stdout")
        __version__ = "2.9.0+fake"
        PID = os.getpid()

        class cuda:
            @staticmethod
            def is_available(): return True
            @staticmethod
            def device_count(): return 2
            @staticmethod
            def get_device_name(i): return f"Fake GPU {i}"

        class version:
            cuda = "12.8"
            hip = None

        class backends:
            class mps:
                @staticmethod
                def is_available(): return False
        """,
    )
    import sys

    # Another test of the same session may have imported the real torch (the
    # browser backend's integration tests do): what must hold is that the probe
    # imports nothing here, so this process's torch (or its absence) is unchanged.
    before = sys.modules.get("torch")
    info = probe_torch()
    assert info == TorchInfo(
        version="2.9.0+fake",
        cuda_available=True,
        cuda_version="12.8",
        hip_version=None,
        mps_available=False,
        device_names=["Fake GPU 0", "Fake GPU 1"],
    )
    assert sys.modules.get("torch") is before  # never imported into the worker itself


# The fake package goes first on PYTHONPATH, ahead of site-packages, so it
# shadows a real torch in the child interpreter as well.
def test_a_broken_torch_is_an_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_fake_torch(tmp_path, monkeypatch, "raise ImportError('libcudart.so.12: not found')\n")
    caps = detect_capabilities(tags={}, task_types=[])
    assert caps.torch is None
    assert len(caps.probe_errors) == 1
    assert caps.probe_errors[0].startswith("torch: RuntimeError: torch probe exited with code 1")
    assert "libcudart.so.12: not found" in caps.probe_errors[0]


# The fake package goes first on PYTHONPATH, ahead of site-packages, so it
# shadows a real torch in the child interpreter as well.
def test_a_hanging_torch_import_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_fake_torch(tmp_path, monkeypatch, "import time\ntime.sleep(60)\n")
    with pytest.raises(RuntimeError, match=r"did not finish within 0\.5 s"):
        probe_torch(timeout_seconds=0.5)


# --------------------------------------------------------------------------- GPU load per heartbeat


def test_gpu_load_is_the_mean_utilisation_and_the_memory_share_of_all_gpus() -> None:
    nvml = FakeNvml()
    load = sample_gpu_load(nvml)
    total_mib = 141 * 1024 + 22.5 * 1024
    assert load == GpuLoad(
        utilization_percent=47.5, memory_percent=round(100 * 2048 / total_mib, 1)
    )
    assert nvml.shutdowns == 1


def test_gpu_load_is_none_without_a_driver_or_with_a_broken_one() -> None:
    assert sample_gpu_load(FakeNvml(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)) is None
    assert sample_gpu_load(FakeNvml(init_error=pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH)) is None


def test_gpu_load_clamps_a_reading_past_100_percent() -> None:
    class Odd(FakeNvml):
        def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Util:
            return _Util(gpu=250)

    load = sample_gpu_load(Odd())
    assert load is not None
    assert load.utilization_percent == 100.0


def test_sample_load_carries_gpu_figures_only_where_there_are_gpus() -> None:
    with_gpus = sample_load(lambda: GpuLoad(utilization_percent=80.0, memory_percent=12.5))
    assert with_gpus["gpu_utilization_percent"] == 80.0
    assert with_gpus["gpu_memory_percent"] == 12.5
    WorkerLoad(**with_gpus, running=1)  # the agent passes these through
    without = sample_load(lambda: None)
    assert "gpu_utilization_percent" not in without
    assert WorkerLoad(**without).gpu_utilization_percent is None
