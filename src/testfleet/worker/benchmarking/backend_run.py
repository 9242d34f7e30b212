"""The runner's path for a backend other than torch (issue 15).

Callers: :func:`testfleet.worker.benchmarking.runner.run` hands a request
whose ``config.backend`` is not torch to :func:`run_backend`; the lines it
emits are the same protocol as torch's (``setup``, one ``batch`` per size,
``final``), so the executor and the parent's verdict need no second path.

Order of work, cheapest refusal first: the backend itself (its library, the
provider or device asked for, the precision: :meth:`Backend.check`); the
model, built on the CPU in fp32 from its configuration with the fixed seed (the
torch reference, as torch's own benchmark builds it); the ONNX export of that
module into a temporary directory under the attempt's work directory (deleted
when the run ends, whatever happened); the backend's session or compiled model;
the output check; then the sweep.

Output check (``check_outputs``, on by default): torch's model and the backend
each run one forward pass on the same fixed inputs (the inputs of the smallest
planned batch size, at most :data:`CHECK_MAX_BATCH`); their outputs are compared
(:mod:`.output_check`) and the result travels in the ``setup`` line. A check
that fails does not stop the sweep: the figures are measured and reported, and
the parent fails the attempt with ``output_mismatch``.

Timing is torch's discipline: per batch size, the inputs are made (and bound
by the backend) before the loop; ``warmup`` untimed steps, then ``iterations``
steps each bracketed by the same clock and the backend's ``synchronize``
(:func:`~testfleet.worker.benchmarking.timing.time_steps`); memory is the
process's peak resident set sampled during the loop.
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testfleet.domain.benchmark import BenchmarkConfig, OutputCheck
from testfleet.domain.enums import HardwareKind
from testfleet.worker.benchmarking.autobatch import planned_batch_sizes
from testfleet.worker.benchmarking.backends import backend_for
from testfleet.worker.benchmarking.backends.base import Backend, BackendDescription
from testfleet.worker.benchmarking.devices import backend_hardware
from testfleet.worker.benchmarking.protocol import (
    BatchLine,
    FatalLine,
    FinalLine,
    RunnerRequest,
    SetupLine,
)

if TYPE_CHECKING:
    import torch

    from testfleet.worker.benchmarking.backends.base import Array
    from testfleet.worker.benchmarking.inputs import InputPlan
    from testfleet.worker.benchmarking.models import LoadedModel

log = logging.getLogger("testfleet.benchmark")

Line = SetupLine | BatchLine | FinalLine | FatalLine

#: The output check runs at the smallest planned batch size, at most this.
CHECK_MAX_BATCH = 8


def split_inputs(inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The forward's tensor inputs (exported as graph inputs) and its other arguments."""
    import torch

    tensors = {name: value for name, value in inputs.items() if isinstance(value, torch.Tensor)}
    others = {name: value for name, value in inputs.items() if name not in tensors}
    return tensors, others


def numpy_feeds(backend: Backend, tensors: dict[str, torch.Tensor]) -> dict[str, Array]:
    """The tensors as the backend takes them: NumPy, float inputs in its dtype."""
    feeds: dict[str, Array] = {}
    for name, tensor in tensors.items():
        array = tensor.detach().cpu().numpy()
        if array.dtype.kind == "f":
            array = array.astype(backend.input_dtype())
        feeds[name] = array
    return feeds


def torch_reference(loaded: LoadedModel, inputs: dict[str, Any]) -> list[Array]:
    """Torch's output on ``inputs``: the first output, as the export has it."""
    import torch

    with torch.inference_mode():
        output = loaded.model(**inputs, return_dict=True)
    return [output[0].detach().float().cpu().numpy()]


def check_outputs(
    backend: Backend, loaded: LoadedModel, plan: InputPlan, config: BenchmarkConfig, batch: int
) -> tuple[OutputCheck, str | None]:
    import torch

    from testfleet.worker.benchmarking.inputs import make_inputs
    from testfleet.worker.benchmarking.output_check import compare_outputs

    inputs = make_inputs(plan, batch, device=torch.device("cpu"), float_dtype=torch.float32)
    reference = torch_reference(loaded, inputs)
    tensors, _ = split_inputs(inputs)
    outputs = backend.run(numpy_feeds(backend, tensors))
    return compare_outputs(reference, outputs, tolerance=config.output_tolerance, batch_size=batch)


def backend_conditions(
    config: BenchmarkConfig,
    loaded: LoadedModel,
    plan: InputPlan,
    described: BackendDescription,
    export_facts: dict[str, Any],
) -> dict[str, Any]:
    """Torch's conditions of the same run (host, versions, model, inputs, load),
    with what the backend changes: the device, the mode, memory, its own facts."""
    from testfleet.worker.benchmarking.accelerator import open_device
    from testfleet.worker.benchmarking.conditions import run_conditions

    conditions = run_conditions(
        config=config, accelerator=open_device(HardwareKind.CPU), loaded=loaded, plan=plan
    )
    conditions.update(
        {
            "hardware": (backend_hardware(config) or HardwareKind.CPU).value,
            "device": described.device,
            "device_name": described.device_name,
            "memory_metric": described.memory_metric,
            "mode": f"{config.backend.value} session on the ONNX export; torch only for the "
            "export and the output check",
            "torch_threads": conditions.pop("threads", None),
            **described.conditions,
            **export_facts,
        }
    )
    return conditions


def run_backend(
    request: RunnerRequest,
    emit: Callable[[Line], None],
    sweep_batch_sizes: Callable[..., Any],
) -> None:
    """The whole backend benchmark; raises :class:`BenchmarkError` (or anything)
    before the first size. ``sweep_batch_sizes`` is the runner's (shared with torch)."""
    config = request.config
    backend = backend_for(config.backend)
    backend.check(config)

    import torch

    from testfleet.worker.benchmarking.inputs import plan_inputs
    from testfleet.worker.benchmarking.models import load_model

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    loaded = load_model(config)
    log.info("model %s: %s, %d parameters", config.model, loaded.class_name, loaded.parameters)
    plan = plan_inputs(loaded, config)
    sizes = planned_batch_sizes(config.batch_sizes, config.max_batch_size)
    # Under the attempt's work directory (the runner's cwd): counted against its
    # disk limit, and removed with everything in it when the run ends.
    with tempfile.TemporaryDirectory(prefix="onnx-export-", dir=os.getcwd()) as folder:
        try:
            _run_exported(request, emit, sweep_batch_sizes, backend, loaded, plan, sizes, folder)
        finally:
            backend.close()


def _export(backend: Backend, loaded: LoadedModel, plan: InputPlan, folder: str) -> Any:
    import numpy as np
    import torch

    from testfleet.worker.benchmarking.backends.onnx_export import EXAMPLE_BATCH, export_onnx
    from testfleet.worker.benchmarking.inputs import make_inputs

    half = backend.input_dtype() == np.dtype(np.float16)
    dtype = torch.float16 if half else torch.float32
    # An fp16 export is of a copy: the torch reference stays fp32.
    module = copy.deepcopy(loaded.model).half() if half else loaded.model
    example = make_inputs(plan, EXAMPLE_BATCH, device=torch.device("cpu"), float_dtype=dtype)
    tensors, others = split_inputs(example)
    return export_onnx(module, tensors, Path(folder) / "model.onnx", call_kwargs=others)


def _run_exported(
    request: RunnerRequest,
    emit: Callable[[Line], None],
    sweep_batch_sizes: Callable[..., Any],
    backend: Backend,
    loaded: LoadedModel,
    plan: InputPlan,
    sizes: list[int],
    folder: str,
) -> None:
    config = request.config
    exported = _export(backend, loaded, plan, folder)
    log.info("exported to ONNX opset %d in %.1f s", exported.opset, exported.seconds)
    backend.load(exported, config)
    described = backend.describe()
    log.info("backend %s on %s (%s)", config.backend.value, described.device, described.device_name)
    check: OutputCheck | None = None
    problem: str | None = None
    if config.check_outputs:
        check, problem = check_outputs(
            backend, loaded, plan, config, min(min(sizes), CHECK_MAX_BATCH)
        )
        log.info("output check: %s", problem or f"passed, max |diff| {check.max_abs_diff:.3g}")
    export_facts = {
        "onnx_opset": exported.opset,
        "onnx_exporter": exported.exporter,
        "onnx_export_seconds": exported.seconds,
        "onnx_outputs": list(exported.output_names),
        "check_outputs": config.check_outputs,
        "output_tolerance": config.output_tolerance,
    }
    emit(
        SetupLine(
            model_source=loaded.source,
            device=described.device,
            device_name=described.device_name,
            planned_batch_sizes=sizes,
            conditions=backend_conditions(config, loaded, plan, described, export_facts),
            output_check=check,
            output_check_message=problem,
        )
    )

    def measure_one(batch_size: int) -> BatchLine:
        return measure_backend_batch(
            backend, plan, config, batch_size, request.metrics_interval_seconds
        )

    result = sweep_batch_sizes(config, measure_one, gc.collect, emit)
    log.info("sweep ended: %s", result.stop_reason.value)
    from testfleet.worker.benchmarking.conditions import load_conditions

    emit(
        FinalLine(
            stop_reason=result.stop_reason.value,
            skipped_batch_sizes=result.skipped,
            conditions={"load_after": load_conditions()},
        )
    )


def measure_backend_batch(
    backend: Backend,
    plan: InputPlan,
    config: BenchmarkConfig,
    batch_size: int,
    metrics_interval: float,
) -> BatchLine:
    """One batch size through the backend, timed as torch's are."""
    import torch

    from testfleet.worker.benchmarking.inputs import make_inputs
    from testfleet.worker.benchmarking.metrics import MetricSampler, system_reader
    from testfleet.worker.benchmarking.statistics import summarise
    from testfleet.worker.benchmarking.timing import time_steps

    inputs = make_inputs(plan, batch_size, device=torch.device("cpu"), float_dtype=torch.float32)
    feeds = numpy_feeds(backend, split_inputs(inputs)[0])
    inputs.clear()
    sampler = MetricSampler(system_reader(gpu=False, gpu_index=None), metrics_interval)
    with sampler:
        latencies = backend.time_steps(feeds, warmup=config.warmup, iterations=config.iterations)
        if latencies is None:
            step = backend.prepare(feeds)
            latencies = time_steps(
                step,
                warmup=config.warmup,
                iterations=config.iterations,
                synchronize=backend.synchronize,
            )
    series = sampler.stop()
    rss = series.get("process_rss_mb")
    memory = rss.maximum if rss is not None and rss.count else 0.0
    measurement = summarise(latencies, batch_size=batch_size, memory_mb=memory)
    return BatchLine(batch_size=batch_size, measurement=measurement, metrics=series)
