"""Benchmark backends other than torch (issue 15), behind one seam (:mod:`.base`).

Callers: the runner's backend path (:mod:`..backend_run`) asks
:func:`backend_for` for the backend a task names. Each backend module is
imported only when asked for, so a worker without OpenVINO (say) still runs
ONNX Runtime tasks, and importing testfleet needs none of them.

=============  ======================================  ==========================
backend        module                                  runs
=============  ======================================  ==========================
onnxruntime    :mod:`.ort_backend`                     the ONNX export, ``provider``
openvino       :mod:`.openvino_backend`                the ONNX export, compiled
                                                       for ``backend_device``
browser        (plugged in by the browser backend)     onnxruntime-web in Chromium
=============  ======================================  ==========================
"""

from __future__ import annotations

import importlib

from testfleet.domain.benchmark import BenchmarkBackend
from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.backends.base import Backend
from testfleet.worker.benchmarking.errors import BenchmarkError

#: Backend kind -> "module:class" of its implementation (imported on demand).
BACKENDS: dict[BenchmarkBackend, str] = {
    BenchmarkBackend.ONNXRUNTIME: "testfleet.worker.benchmarking.backends.ort_backend:OrtBackend",
    BenchmarkBackend.OPENVINO: (
        "testfleet.worker.benchmarking.backends.openvino_backend:OpenVinoBackend"
    ),
}


def backend_for(kind: BenchmarkBackend) -> Backend:
    """A fresh backend of ``kind``; ``invalid_config`` for one this worker has no
    implementation of (torch is not one: the runner runs it itself)."""
    where = BACKENDS.get(kind)
    if where is None:
        known = ", ".join(["torch", *(k.value for k in BACKENDS)])
        raise BenchmarkError(
            ErrorClass.INVALID_CONFIG,
            f"this worker has no {kind.value} benchmark backend (it runs {known})",
        )
    module_name, class_name = where.split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class()
    return backend
