"""The conditions of a run: what a reader needs to judge and compare the numbers.

Callers: the runner records :func:`run_conditions` in its ``setup`` line (just
before the first batch size, so the load figures describe the machine the
timing starts on) and :func:`load_conditions` again in its ``final`` line.

Every entry is plain JSON. Versions come from the libraries themselves;
``load_before`` is the machine's CPU use over a short window with the model
already built (other work on the machine, not ours) and the 1/5/15-minute
load averages.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
from typing import Any

import psutil

from testfleet.domain.benchmark import BenchmarkConfig
from testfleet.worker.benchmarking.accelerator import Accelerator, cpu_name
from testfleet.worker.benchmarking.allocator import current_setting
from testfleet.worker.benchmarking.autobatch import DEFAULT_MIN_GAIN, DEFAULT_PATIENCE
from testfleet.worker.benchmarking.inputs import InputPlan
from testfleet.worker.benchmarking.models import LoadedModel
from testfleet.worker.benchmarking.precision import QUANTIZATION, float_dtype
from testfleet.worker.benchmarking.statistics import PERCENTILE_METHOD

#: How long the "before" CPU reading watches the machine.
LOAD_WINDOW_SECONDS = 0.2


def load_conditions(window_seconds: float = LOAD_WINDOW_SECONDS) -> dict[str, Any]:
    """Machine load now: CPU percent over a short window, load averages, free memory."""
    load: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        load["cpu_percent"] = float(psutil.cpu_percent(interval=window_seconds))
    if hasattr(os, "getloadavg"):
        with contextlib.suppress(OSError):
            one, five, fifteen = os.getloadavg()
            load["load_average"] = [round(one, 2), round(five, 2), round(fifteen, 2)]
    with contextlib.suppress(Exception):
        load["memory_available_gb"] = round(psutil.virtual_memory().available / 1024**3, 2)
    return load


def _device_facts(accelerator: Accelerator) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {}
    if accelerator.is_cuda:
        properties = torch.cuda.get_device_properties(accelerator.device)
        facts["gpu_memory_gb"] = round(properties.total_memory / 1024**3, 1)
        facts["compute_capability"] = f"{properties.major}.{properties.minor}"
        facts["gpu_count"] = torch.cuda.device_count()
        cudnn: Any = torch.backends.cudnn  # its functions are not annotated
        facts["cudnn_version"] = cudnn.version() if cudnn.is_available() else None
    return facts


def run_conditions(
    *,
    config: BenchmarkConfig,
    accelerator: Accelerator,
    loaded: LoadedModel,
    plan: InputPlan,
) -> dict[str, Any]:
    import torch
    import transformers

    precision = config.precision
    conditions: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "torch_version": str(torch.__version__),
        "transformers_version": str(transformers.__version__),
        "cuda_version": torch.version.cuda,
        "hip_version": getattr(torch.version, "hip", None),
        "hardware": accelerator.hardware.value,
        "device": str(accelerator.device),
        "device_name": accelerator.name,
        "cpu_model": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "precision": precision.value,
        "dtype": str(float_dtype(precision)).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "threads_requested": config.threads,
        "allocator": current_setting().value,
        "model": config.model,
        "model_source": loaded.source,
        "model_class": loaded.class_name,
        "model_parameters": loaded.parameters,
        "config_overrides": dict(config.config_overrides),
        "model_path": config.model_path,
        **plan.describe(),
        "warmup": config.warmup,
        "iterations": config.iterations,
        "batch_sizes_requested": config.batch_sizes,
        "timer": "time.perf_counter_ns, device synchronised before start and stop of each step",
        "mode": "torch.inference_mode, model.eval()",
        "percentile_method": PERCENTILE_METHOD,
        "memory_metric": accelerator.memory_metric,
        **_device_facts(accelerator),
        "load_before": load_conditions(),
    }
    if config.batch_sizes == "auto":
        conditions["auto_batch"] = {
            "max_batch_size": config.max_batch_size,
            "rule": (
                "powers of two; stop at the first out-of-memory, or after "
                f"{DEFAULT_PATIENCE} sizes in a row gaining no more than "
                f"{DEFAULT_MIN_GAIN:.0%} throughput over the best so far"
            ),
        }
    if precision.value == "int8":
        conditions["quantization"] = QUANTIZATION
        conditions["quantized_engine"] = torch.backends.quantized.engine
    return conditions
