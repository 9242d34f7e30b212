"""The backend seam: what a non-torch benchmark backend does for the runner.

Callers: the runner's backend path (:mod:`..backend_run`) picks a
:class:`Backend` from the registry (:mod:`.` ``backend_for``) by
``config.backend``, then, in this order:

1. :meth:`Backend.check` before the model is built: the library imports, the
   provider or device asked for is there, the precision can run. A refusal is a
   :class:`~testfleet.worker.benchmarking.errors.BenchmarkError` (usually
   ``invalid_config`` naming what was asked and what there is), never a
   fallback to another device.
2. :meth:`Backend.load` with the ONNX export of the model the torch reference
   runs (:mod:`.onnx_export`: same seed, same weights): build the session or
   compile the model.
3. :meth:`Backend.describe` for the ``setup`` line: the device label, its name
   and the conditions (backend version, device, provider, precision, threads).
4. :meth:`Backend.run` once on the reference inputs: its outputs are compared
   with torch's (:mod:`..output_check`).
5. Per batch size, :meth:`Backend.prepare` with that size's inputs returns the
   step the runner times: the same timed loop as torch's
   (:func:`~testfleet.worker.benchmarking.timing.time_steps`, the step
   bracketed by :meth:`Backend.synchronize`). A backend whose forward pass runs
   elsewhere (a browser page) may time it there instead by overriding
   :meth:`Backend.time_steps`, so a round trip is not charged to the model.
6. :meth:`Backend.close` at the end, whatever happened.

Inputs and outputs are NumPy arrays keyed by the export's input names (float
inputs in the dtype :meth:`Backend.input_dtype` asks for), so a backend needs
neither torch nor transformers; the runner converts.

A new backend is a subclass registered in ``backends/__init__.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from testfleet.domain.benchmark import BenchmarkBackend, BenchmarkConfig

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from testfleet.worker.benchmarking.backends.onnx_export import ExportedModel

    Array = npt.NDArray[Any]
    Feeds = Mapping[str, Array]
else:
    Feeds = Mapping


@dataclass(frozen=True)
class BackendDescription:
    """What the ``setup`` line says about where a backend runs."""

    #: Short label stored as the outcome's ``device``: ``onnxruntime:CPUExecutionProvider``.
    device: str
    #: The hardware's name as people know it: the CPU model, OpenVINO's FULL_DEVICE_NAME.
    device_name: str
    #: How the batch sizes' ``memory_mb`` is measured.
    memory_metric: str
    #: Backend version, device, provider, precision (hint), threads...; plain JSON.
    conditions: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """One backend for one run (one model, one device); see the module docstring."""

    kind: ClassVar[BenchmarkBackend]

    @abstractmethod
    def check(self, config: BenchmarkConfig) -> None:
        """Refuse, before the model is built, what this worker cannot run."""

    @abstractmethod
    def load(self, exported: ExportedModel, config: BenchmarkConfig) -> None:
        """Build the session / compile the model from the export."""

    @abstractmethod
    def describe(self) -> BackendDescription:
        """The device and conditions of the loaded model."""

    @abstractmethod
    def run(self, inputs: Feeds) -> list[Array]:
        """One forward pass on ``inputs``; its outputs in the export's output order."""

    def prepare(self, inputs: Feeds) -> Callable[[], object]:
        """The step to time for one batch size (inputs bound). The default runs
        :meth:`run`; a backend overrides it to bind inputs once (I/O binding)."""
        return lambda: self.run(inputs)

    def synchronize(self) -> None:
        """Wait for queued work; a synchronous backend (the default) has none."""
        return None

    def time_steps(self, inputs: Feeds, *, warmup: int, iterations: int) -> list[int] | None:
        """Per-iteration latencies in ns measured by the backend itself, or None
        (the default) for the runner's timed loop around :meth:`prepare`'s step."""
        return None

    def input_dtype(self) -> np.dtype[Any]:
        """The dtype of float inputs (fp32 unless the backend runs an fp16 export)."""
        import numpy as np

        return np.dtype(np.float32)

    def close(self) -> None:
        """Free the session; called once, after the last batch size."""
        return None
