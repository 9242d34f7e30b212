"""A benchmark's backend as a placement requirement: which backend, on which
device or provider, and whether a worker's capabilities offer it (issue 15).

Callers: :class:`~testfleet.domain.task.TaskSpec` derives
``requirements.backend`` from a benchmark's ``config`` when it is validated
(:func:`requirement_for`), so the queue's match keys, the scheduler, the
speculation check and a worker's own refusal all see it without reading the
config; :mod:`testfleet.scheduling.matching` asks :func:`offer_gap` whether a
worker offers it. Pure functions of their arguments.

Decisions: torch is not a requirement (its device is placed by
``requirements.hardware``, as before); a backend's default device or provider
is written out (``CPU``, ``CPUExecutionProvider``, ``wasm``), so two tasks that
mean the same share one match key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from testfleet.domain.benchmark import BenchmarkBackend, BenchmarkConfig
from testfleet.domain.hardware import WorkerCapabilities


class BackendRequirement(BaseModel):
    """``requirements.backend``: set from the config; a document may repeat it
    only as the config says it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: BenchmarkBackend
    #: OpenVINO's device ("CPU", "GPU") or the browser's ("wasm", "webgpu").
    device: str | None = Field(default=None, min_length=1, max_length=64)
    #: ONNX Runtime's execution provider.
    provider: str | None = Field(default=None, min_length=1, max_length=64)

    def describe(self) -> str:
        """``openvino on GPU``, ``onnxruntime with CUDAExecutionProvider``."""
        if self.provider is not None:
            return f"{self.name.value} with {self.provider}"
        if self.device is not None:
            return f"{self.name.value} on {self.device}"
        return self.name.value


def requirement_for(config: BenchmarkConfig) -> BackendRequirement | None:
    """What ``config`` demands of a worker beyond torch; None for torch."""
    if config.backend is BenchmarkBackend.TORCH:
        return None
    if config.backend is BenchmarkBackend.ONNXRUNTIME:
        return BackendRequirement(name=config.backend, provider=config.onnx_provider)
    return BackendRequirement(name=config.backend, device=config.resolved_backend_device)


def offer_gap(requirement: BackendRequirement, caps: WorkerCapabilities) -> str | None:
    """None when a worker with ``caps`` offers ``requirement``, else what it lacks
    and what it has instead (one clause, for :mod:`testfleet.scheduling.matching`)."""
    backends = caps.backends
    wanted = requirement.name
    if wanted is BenchmarkBackend.ONNXRUNTIME:
        ort = backends.onnxruntime
        if ort is None:
            return "no ONNX Runtime"
        if requirement.provider not in ort.providers:
            return f"ONNX Runtime {ort.version} with [{', '.join(sorted(ort.providers))}]"
        return None
    if wanted is BenchmarkBackend.OPENVINO:
        openvino = backends.openvino
        if openvino is None:
            return "no OpenVINO"
        if requirement.device is None or not openvino.offers(requirement.device):
            return f"OpenVINO {openvino.version} on [{', '.join(sorted(openvino.devices))}]"
        return None
    if wanted is BenchmarkBackend.BROWSER:
        return _browser_gap(requirement, caps)
    return None  # torch: placed by requirements.hardware


def _browser_gap(requirement: BackendRequirement, caps: WorkerCapabilities) -> str | None:
    browser = caps.backends.browser
    if browser is None:
        return "no Chromium"
    if browser.onnxruntime_web is None:
        return f"Chromium {browser.version} without onnxruntime-web (make browser-assets)"
    if requirement.device == "webgpu" and browser.webgpu.adapter is None:
        return f"Chromium {browser.version} with no WebGPU adapter"
    if requirement.device == "wasm" and not browser.wasm.simd:
        return f"Chromium {browser.version} without WebAssembly SIMD"
    return None
