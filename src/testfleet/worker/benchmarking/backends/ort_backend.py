"""ONNX Runtime: the ONNX export run by an ``InferenceSession`` with the provider asked for.

Callers: :func:`~testfleet.worker.benchmarking.backends.backend_for` for tasks
with ``backend: onnxruntime`` (the seam's order of calls is in :mod:`.base`).

* Provider: ``config.provider`` (default ``CPUExecutionProvider``). One that
  ``onnxruntime.get_available_providers()`` does not list is ``invalid_config``
  naming it and the ones there are. The session is given that provider alone,
  so nothing falls back to the CPU: ONNX Runtime would otherwise run a node
  the provider lacks on the CPU provider silently.
* Precision: fp32; fp16 with a GPU provider (CUDA, TensorRT, ROCm, MIGraphX,
  DirectML), from an fp16 export; anything else is ``invalid_config`` (the CPU
  provider has fp16 kernels for a few operators only, so an fp16 model there
  would measure casts).
* Threads: ``config.threads`` sets ``intra_op_num_threads`` (else ONNX
  Runtime's default, one per physical core); graph optimisations are all on
  (``ORT_ENABLE_ALL``), as deployments run them.
* Each batch size binds its inputs once (``run_with_ort_values`` over
  OrtValues made before the timed loop), so the timed step is the session run
  and not a copy of the inputs; memory is the process's resident set, sampled
  as for torch on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from testfleet.domain.benchmark import BenchmarkBackend, BenchmarkConfig, Precision
from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.backends.base import Backend, BackendDescription, Feeds
from testfleet.worker.benchmarking.errors import BenchmarkError, describe

if TYPE_CHECKING:
    import numpy as np

    from testfleet.worker.benchmarking.backends.base import Array
    from testfleet.worker.benchmarking.backends.onnx_export import ExportedModel

#: Providers that run fp16 models on their own kernels.
FP16_PROVIDERS = frozenset(
    {
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
        "ROCMExecutionProvider",
        "MIGraphXExecutionProvider",
        "DmlExecutionProvider",
    }
)


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


class OrtBackend(Backend):
    kind = BenchmarkBackend.ONNXRUNTIME

    def __init__(self, providers: Callable[[], list[str]] = available_providers) -> None:
        """``providers`` lists what this ONNX Runtime offers (tests pass their own)."""
        self._providers = providers
        self._session: Any = None
        self._provider = ""
        self._precision = Precision.FP32
        self._threads: int | None = None

    def check(self, config: BenchmarkConfig) -> None:
        provider = config.onnx_provider
        available = self._providers()
        if provider not in available:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"config.provider {provider} is not available in this worker's ONNX Runtime "
                f"(it has {', '.join(available) or 'none'}); ask for one of those, or require "
                "a worker that has it",
            )
        precision = config.precision
        if precision is Precision.FP16 and provider not in FP16_PROVIDERS:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"ONNX Runtime's {provider} cannot run fp16 models on kernels of its own; ask "
                f"for fp32, or fp16 with one of {', '.join(sorted(FP16_PROVIDERS))}",
            )
        if precision not in (Precision.FP32, Precision.FP16):
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"the onnxruntime backend runs fp32 (and fp16 on GPU providers), not "
                f"{precision.value}; ask for fp32",
            )
        self._provider = provider
        self._precision = precision
        self._threads = config.threads

    def input_dtype(self) -> np.dtype[Any]:
        import numpy as np

        return np.dtype(np.float16 if self._precision is Precision.FP16 else np.float32)

    def load(self, exported: ExportedModel, config: BenchmarkConfig) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self._threads is not None:
            options.intra_op_num_threads = self._threads
        # Its own logs at warning and above only (its info level names every node).
        options.log_severity_level = 2
        try:
            self._session = onnxruntime.InferenceSession(
                str(exported.path), sess_options=options, providers=[self._provider]
            )
        except Exception as exc:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"ONNX Runtime ({self._provider}) cannot load the exported model: {describe(exc)}",
            ) from exc
        used = self._session.get_providers()
        if used[:1] != [self._provider]:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"ONNX Runtime runs the model with {', '.join(used)}, not {self._provider}",
            )

    def describe(self) -> BackendDescription:
        import onnxruntime

        from testfleet.worker.benchmarking.accelerator import cpu_name

        options = self._session.get_session_options()
        return BackendDescription(
            device=f"onnxruntime:{self._provider}",
            device_name=cpu_name() if self._provider == "CPUExecutionProvider" else self._provider,
            memory_metric="peak process RSS (sampled)",
            conditions={
                "backend": self.kind.value,
                "backend_version": onnxruntime.__version__,
                "onnxruntime_version": onnxruntime.__version__,
                "provider": self._provider,
                "providers_available": self._providers(),
                "backend_precision": self._precision.value,
                "backend_threads": options.intra_op_num_threads or None,
                "threads_default": "one per physical core" if self._threads is None else None,
                "graph_optimization_level": "ORT_ENABLE_ALL",
                "onnxruntime_device": onnxruntime.get_device(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            },
        )

    def run(self, inputs: Feeds) -> list[Array]:
        outputs: list[Array] = self._session.run(None, dict(inputs))
        return outputs

    def prepare(self, inputs: Feeds) -> Callable[[], object]:
        import onnxruntime

        session = self._session
        names = [output.name for output in session.get_outputs()]
        values = {name: onnxruntime.OrtValue.ortvalue_from_numpy(a) for name, a in inputs.items()}

        def step() -> object:
            return session.run_with_ort_values(names, values)

        return step

    def close(self) -> None:
        self._session = None
