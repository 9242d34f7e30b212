"""The benchmark child process: ``python -m testfleet.worker.benchmarking.runner``.

Callers: :class:`~testfleet.worker.executors.benchmark.BenchmarkExecutor`
starts it in its own process group, writes one :class:`RunnerRequest` on its
stdin and reads the JSON lines of :mod:`.protocol` from its stdout. Logs go
to stderr, which the executor keeps (the tail) as the result's logs.

Order of work, cheapest refusal first: the request; a known model name
(before importing torch); the device (before building the model); the
precision probe; the model; the input shapes. Each refusal is one ``fatal``
line and exit code 2. Then one ``batch`` line per size, flushed as it is
measured, and a ``final`` line; exit code 0. Out of memory at a size is that
size's error (the sweep stops, cached GPU memory is released); anything the
runner did not expect before the first size is a ``fatal`` infrastructure
error and exit code 3. The process never leaves a Python traceback as its only
report.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import pydantic

from testfleet.domain.benchmark import BatchSizeError, BenchmarkBackend, BenchmarkConfig
from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.autobatch import Sweep, Trial, planned_batch_sizes, sweep
from testfleet.worker.benchmarking.errors import (
    BenchmarkError,
    classify_batch_error,
    classify_setup_error,
    clip,
)
from testfleet.worker.benchmarking.protocol import (
    BatchLine,
    FatalLine,
    FinalLine,
    RunnerRequest,
    SetupLine,
    encode_line,
    read_request,
)

if TYPE_CHECKING:
    import torch

    from testfleet.worker.benchmarking.accelerator import Accelerator
    from testfleet.worker.benchmarking.inputs import InputPlan

log = logging.getLogger("testfleet.benchmark")

EXIT_OK = 0
EXIT_REFUSED = 2
EXIT_CRASHED = 3

Line = SetupLine | BatchLine | FinalLine | FatalLine


class LineWriter:
    """Writes protocol lines to a private duplicate of the original stdout."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __call__(self, line: Line) -> None:
        data = memoryview(encode_line(line))
        while data:
            written = os.write(self._fd, data)
            data = data[written:]


def claim_stdout() -> int:
    """Keep fd 1 for protocol lines only: return a duplicate of it, and point fd 1 at stderr.

    Anything else that writes to stdout afterwards (print, a library, C code)
    lands in stderr, the logs, instead of in the middle of the protocol.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    return protocol_fd


def force_offline() -> None:
    """Never reach a model hub from a benchmark, whatever the environment says.

    Set before transformers is imported: huggingface_hub reads these at import.
    """
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _measure_batch(
    *,
    model: torch.nn.Module,
    plan: InputPlan,
    accelerator: Accelerator,
    config: BenchmarkConfig,
    batch_size: int,
    metrics_interval: float,
) -> BatchLine:
    import torch

    from testfleet.domain.enums import HardwareKind
    from testfleet.worker.benchmarking.inputs import make_inputs
    from testfleet.worker.benchmarking.metrics import MetricSampler, nvml_index, system_reader
    from testfleet.worker.benchmarking.precision import float_dtype
    from testfleet.worker.benchmarking.statistics import summarise
    from testfleet.worker.benchmarking.timing import time_steps

    # NVML speaks for NVIDIA GPUs only (not ROCm's, which torch also calls cuda).
    gpu = accelerator.hardware is HardwareKind.CUDA
    index = nvml_index(accelerator.device.index or 0) if gpu else None
    inputs = make_inputs(
        plan, batch_size, device=accelerator.device, float_dtype=float_dtype(config.precision)
    )

    def step() -> object:
        return model(**inputs)

    accelerator.reset_peak()
    # Sampled over warmup and timed steps: the warmup allocates what the timed steps reuse.
    sampler = MetricSampler(system_reader(gpu=gpu, gpu_index=index), metrics_interval)
    try:
        with sampler, torch.inference_mode():
            latencies = time_steps(
                step,
                warmup=config.warmup,
                iterations=config.iterations,
                synchronize=accelerator.synchronize,
            )
        series = sampler.stop()
    finally:
        inputs.clear()
    rss = series.get("process_rss_mb")
    memory = accelerator.peak_memory_mb(rss.maximum if rss is not None and rss.count else None)
    measurement = summarise(latencies, batch_size=batch_size, memory_mb=memory)
    return BatchLine(batch_size=batch_size, measurement=measurement, metrics=series)


def sweep_batch_sizes(
    config: BenchmarkConfig,
    measure_one: Callable[[int], BatchLine],
    release_memory: Callable[[], None],
    emit: Callable[[Line], None],
) -> Sweep:
    """Run the sweep, emitting each size's line as soon as it is known.

    ``measure_one`` measures one size (raising on failure); any exception becomes
    that size's classified error. After an out-of-memory, ``release_memory``
    runs once the exception (and the activations its traceback holds) is gone.
    """

    def measure(batch_size: int) -> Trial:
        error: BatchSizeError | None = None
        try:
            line = measure_one(batch_size)
        except Exception as exc:
            error = classify_batch_error(exc)
        if error is not None:
            # Outside the except block: the traceback, and with it every activation
            # its frames hold, is gone before the cache is handed back.
            log.warning("batch size %d: %s: %s", batch_size, error.error_class, error.message)
            if error.error_class is ErrorClass.OUT_OF_MEMORY:
                release_memory()
            emit(BatchLine(batch_size=batch_size, error=error))
            return Trial(batch_size, error_class=error.error_class)
        assert line.measurement is not None
        log.info(
            "batch size %d: mean %.3f ms, p99 %.3f ms, %.1f items/s, %.1f MB",
            batch_size,
            line.measurement.latency_ms,
            line.measurement.latency_p99_ms,
            line.measurement.throughput_items_per_second,
            line.measurement.memory_mb,
        )
        emit(line)
        return Trial(batch_size, throughput=line.measurement.throughput_items_per_second)

    sizes = planned_batch_sizes(config.batch_sizes, config.max_batch_size)
    return sweep(sizes, measure, stop_on_plateau=config.batch_sizes == "auto")


def run(request: RunnerRequest, emit: Callable[[Line], None]) -> None:
    """The whole benchmark; raises :class:`BenchmarkError` (or anything) before the first size.

    A backend other than torch (issue 15) takes its own path
    (:func:`~testfleet.worker.benchmarking.backend_run.run_backend`), with the same
    lines, sweep and timed loop."""
    config = request.config
    if config.model_path is None:
        from testfleet.worker.benchmarking.models import zoo_entry

        zoo_entry(config.model)  # an unknown name fails before seconds of importing torch
    from testfleet.worker.benchmarking.allocator import keep_freed_memory

    # Before any model is built, on every backend's path: the same steady
    # allocator state in every run (allocator.py; recorded in the conditions).
    keep_freed_memory()
    if config.backend is not BenchmarkBackend.TORCH:
        from testfleet.worker.benchmarking.backend_run import run_backend

        run_backend(request, emit, sweep_batch_sizes)
        return

    import torch

    if config.threads is not None:
        torch.set_num_threads(config.threads)

    from testfleet.worker.benchmarking.accelerator import open_device
    from testfleet.worker.benchmarking.conditions import load_conditions, run_conditions
    from testfleet.worker.benchmarking.inputs import plan_inputs
    from testfleet.worker.benchmarking.models import load_model
    from testfleet.worker.benchmarking.precision import apply_precision, check_precision

    accelerator = open_device(request.device)
    log.info("device %s (%s)", accelerator.device, accelerator.name)
    check_precision(config.precision, accelerator)
    loaded = load_model(config)
    log.info("model %s: %s, %d parameters", config.model, loaded.class_name, loaded.parameters)
    plan = plan_inputs(loaded, config)
    model = apply_precision(loaded.model, config.precision, accelerator)
    loaded.model = model
    conditions = run_conditions(config=config, accelerator=accelerator, loaded=loaded, plan=plan)
    emit(
        SetupLine(
            model_source=loaded.source,
            device=str(accelerator.device),
            device_name=accelerator.name,
            planned_batch_sizes=planned_batch_sizes(config.batch_sizes, config.max_batch_size),
            conditions=conditions,
        )
    )

    def measure_one(batch_size: int) -> BatchLine:
        return _measure_batch(
            model=model,
            plan=plan,
            accelerator=accelerator,
            config=config,
            batch_size=batch_size,
            metrics_interval=request.metrics_interval_seconds,
        )

    result = sweep_batch_sizes(config, measure_one, accelerator.release_memory, emit)
    log.info("sweep ended: %s", result.stop_reason.value)
    emit(
        FinalLine(
            stop_reason=result.stop_reason.value,
            skipped_batch_sizes=result.skipped,
            conditions={"load_after": load_conditions()},
        )
    )


def main() -> int:
    protocol_fd = claim_stdout()
    force_offline()
    emit = LineWriter(protocol_fd)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        request = read_request(sys.stdin.buffer.read())
    except pydantic.ValidationError as exc:
        emit(FatalLine(error_class=ErrorClass.INVALID_CONFIG, message=clip(str(exc))))
        return EXIT_REFUSED
    log.info("task %s: %s on %s", request.task_id, request.config.model, request.device.value)
    try:
        run(request, emit)
    except BenchmarkError as exc:
        log.error("refused: %s: %s", exc.error_class.value, exc.message)
        emit(FatalLine(error_class=exc.error_class, message=clip(exc.message)))
        return EXIT_REFUSED
    except Exception as exc:
        log.exception("benchmark failed")
        error = classify_setup_error(exc)
        emit(FatalLine(error_class=error.error_class, message=error.message))
        return EXIT_CRASHED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
