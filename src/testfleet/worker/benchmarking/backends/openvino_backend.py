"""OpenVINO: the ONNX export compiled by ``openvino.Core`` for the device asked for.

Callers: :func:`~testfleet.worker.benchmarking.backends.backend_for` for tasks
with ``backend: openvino`` (the seam's order of calls is in :mod:`.base`).

* Device: ``config.backend_device`` (default ``CPU``); the name before any
  ``.`` index or ``:`` list (``GPU.1``, ``HETERO:GPU,CPU``) must be one
  ``Core().available_devices`` lists, or a virtual device (AUTO, HETERO,
  MULTI, BATCH) whose named devices are; else ``invalid_config`` naming the
  devices this OpenVINO has.
* Precision: the ``INFERENCE_PRECISION_HINT`` is set explicitly (f32 for fp32,
  f16, bf16), never left to the device: OpenVINO's CPU plugin otherwise runs an
  fp32 model in bf16 on CPUs with AMX or AVX-512 BF16, and the figures (and the
  output check) would describe another precision than the task's. A precision
  the device does not list in its ``OPTIMIZATION_CAPABILITIES`` (FP32, FP16,
  BF16) is ``invalid_config``; int8 is refused (it needs a calibrated model).
* Performance hint ``LATENCY`` (one request at a time, as the timed loop runs
  them); ``config.threads`` sets ``INFERENCE_NUM_THREADS`` where the device has
  it (the CPU). The conditions record the OpenVINO version, the device's full
  name, the precision hint and threads the compiled model reports.
* Each batch size makes one infer request with its inputs set once; the timed
  step is ``infer()`` (synchronous).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from testfleet.domain.benchmark import BenchmarkBackend, BenchmarkConfig, Precision
from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.backends.base import Backend, BackendDescription, Feeds
from testfleet.worker.benchmarking.errors import BenchmarkError, describe

if TYPE_CHECKING:
    from testfleet.worker.benchmarking.backends.base import Array
    from testfleet.worker.benchmarking.backends.onnx_export import ExportedModel

#: OpenVINO's devices made of others: their names are checked after the ``:``.
VIRTUAL_DEVICES = frozenset({"AUTO", "HETERO", "MULTI", "BATCH"})
#: The inference precision hint, and the capability a device lists for it.
_HINTS = {
    Precision.FP32: ("f32", "FP32"),
    Precision.FP16: ("f16", "FP16"),
    Precision.BF16: ("bf16", "BF16"),
}


def _physical(device: str) -> list[str]:
    """The physical device names a device string stands for (``GPU.1`` -> GPU)."""
    head, _, rest = device.partition(":")
    names = rest.split(",") if head in VIRTUAL_DEVICES and rest else [head]
    return [re.split(r"[.(]", name.strip(), maxsplit=1)[0] for name in names if name.strip()]


class OpenVinoBackend(Backend):
    kind = BenchmarkBackend.OPENVINO

    def __init__(self, core: Any = None) -> None:
        """``core`` replaces ``openvino.Core()`` (tests pass a fake)."""
        self._core = core
        self._device = "CPU"
        self._precision = Precision.FP32
        self._threads: int | None = None
        self._compiled: Any = None

    def _the_core(self) -> Any:
        if self._core is None:
            import openvino

            self._core = openvino.Core()
        return self._core

    def check(self, config: BenchmarkConfig) -> None:
        core = self._the_core()
        device = config.resolved_backend_device or "CPU"
        available = list(core.available_devices)
        # GPU.0 and GPU.1 are listed as such; GPU alone means the first.
        listed = {re.split(r"[.(]", name, maxsplit=1)[0] for name in available}
        wanted = _physical(device)
        missing = [name for name in wanted if name not in listed]
        if not wanted or missing or (device.split(":")[0] in VIRTUAL_DEVICES and not wanted):
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"config.backend_device {device!r} is not a device of this worker's OpenVINO "
                f"(it has {', '.join(available) or 'none'}); ask for one of those, or require "
                "a worker that has it",
            )
        precision = config.precision
        if precision not in _HINTS:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"the openvino backend runs fp32, fp16 or bf16, not {precision.value} (int8 "
                "needs a calibrated model); ask for one of those",
            )
        if device.split(":")[0] not in VIRTUAL_DEVICES:
            capabilities = self._capabilities(device)
            needed = _HINTS[precision][1]
            if capabilities is not None and needed not in capabilities:
                raise BenchmarkError(
                    ErrorClass.INVALID_CONFIG,
                    f"OpenVINO's {device} cannot run {precision.value} (its capabilities: "
                    f"{', '.join(capabilities)}); ask for another precision or device",
                )
        self._device = device
        self._precision = precision
        self._threads = config.threads

    def _capabilities(self, device: str) -> list[str] | None:
        try:
            return [
                str(c) for c in self._the_core().get_property(device, "OPTIMIZATION_CAPABILITIES")
            ]
        except Exception:  # a device that does not say: let compilation decide
            return None

    def _config(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": _HINTS[self._precision][0],
        }
        if self._threads is not None and self._device == "CPU":
            settings["INFERENCE_NUM_THREADS"] = self._threads
        return settings

    def load(self, exported: ExportedModel, config: BenchmarkConfig) -> None:
        core = self._the_core()
        try:
            model = core.read_model(str(exported.path))
            self._compiled = core.compile_model(model, self._device, self._config())
        except Exception as exc:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"OpenVINO cannot compile the exported model for {self._device}: {describe(exc)}",
            ) from exc

    def _compiled_property(self, name: str) -> Any:
        try:
            value = self._compiled.get_property(name)
        except Exception:
            return None
        if isinstance(value, int | float | bool):
            return value
        # Element types (the precision hint) print as "<Type: 'float32'>"; their
        # short name is OpenVINO's own spelling (f32).
        to_string = getattr(value, "to_string", None)
        return str(to_string()) if callable(to_string) else str(value)

    def _full_name(self) -> str:
        try:
            return str(self._the_core().get_property(self._device, "FULL_DEVICE_NAME"))
        except Exception:  # virtual devices have no single name
            return self._device

    def describe(self) -> BackendDescription:
        import openvino

        version = openvino.get_version()
        return BackendDescription(
            device=f"openvino:{self._device}",
            device_name=self._full_name(),
            memory_metric="peak process RSS (sampled)",
            conditions={
                "backend": self.kind.value,
                "backend_version": version,
                "openvino_version": version,
                "backend_device": self._device,
                "openvino_device_full_name": self._full_name(),
                "openvino_devices_available": list(self._the_core().available_devices),
                "backend_precision": self._precision.value,
                "inference_precision_hint": self._compiled_property("INFERENCE_PRECISION_HINT"),
                "performance_hint": self._compiled_property("PERFORMANCE_HINT"),
                "backend_threads": self._compiled_property("INFERENCE_NUM_THREADS"),
                "optimal_infer_requests": self._compiled_property(
                    "OPTIMAL_NUMBER_OF_INFER_REQUESTS"
                ),
            },
        )

    def run(self, inputs: Feeds) -> list[Array]:
        result = self._compiled(dict(inputs))
        import numpy as np

        return [np.asarray(result[output]) for output in self._compiled.outputs]

    def prepare(self, inputs: Feeds) -> Callable[[], object]:
        request = self._compiled.create_infer_request()
        for name, array in inputs.items():
            request.set_tensor(name, _tensor(array))

        def step() -> object:
            request.infer()
            return None

        return step

    def close(self) -> None:
        self._compiled = None


def _tensor(array: Any) -> Any:
    import openvino

    return openvino.Tensor(array, shared_memory=False)
