"""Precisions: fp32, fp16 and bf16 casts, int8 dynamic quantization, and their probes.

Callers: the runner checks the precision on the opened device
(:func:`check_precision`) before building the model, so a device that cannot
run it fails in a second rather than after the model is built; then
:func:`apply_precision` casts (or quantizes) the model and moves it to the
device, and :func:`float_dtype` gives the dtype of float inputs.

* fp16 / bf16: the model's parameters and buffers and the float inputs are
  cast; token ids stay int64. The check runs a tiny probe (matmul, softmax,
  layer norm) in that dtype on the device, and on CUDA also refuses bf16
  without native support (``torch.cuda.is_bf16_supported(including_emulation=False)``):
  an emulated bf16 benchmark would measure the emulation.
* int8: ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``
  (weights int8, activations quantized on the fly), CPU only; the check
  quantizes and runs a tiny Linear with the active quantized engine.

A device that cannot run the precision is ``invalid_config``: retrying the same
task on the same kind of hardware cannot succeed; the task must ask for another
precision (or require hardware that has it, e.g. ``min_cuda_compute``).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from testfleet.domain.benchmark import Precision
from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.accelerator import Accelerator
from testfleet.worker.benchmarking.errors import BenchmarkError, describe

if TYPE_CHECKING:
    import torch

QUANTIZATION = "torch.ao.quantization.quantize_dynamic({nn.Linear}, dtype=qint8)"


def float_dtype(precision: Precision) -> torch.dtype:
    """The dtype of the model's float weights and inputs (int8 quantizes weights only)."""
    import torch

    if precision is Precision.FP16:
        return torch.float16
    if precision is Precision.BF16:
        return torch.bfloat16
    return torch.float32


def _quantize_dynamic() -> Any:
    import torch

    function = getattr(getattr(torch, "ao", None), "quantization", None)
    function = getattr(function, "quantize_dynamic", None)
    if function is None:
        raise BenchmarkError(
            ErrorClass.INFRASTRUCTURE,
            f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic for int8",
        )
    return function


def _quantize(model: torch.nn.Module) -> torch.nn.Module:
    import torch

    quantize = _quantize_dynamic()
    with warnings.catch_warnings():
        # torch announces the move of eager quantization to torchao on every call.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized: torch.nn.Module = quantize(model, {torch.nn.Linear}, dtype=torch.qint8)
    return quantized


def check_precision(precision: Precision, accelerator: Accelerator) -> None:
    """Raise a classified :class:`BenchmarkError` unless the device can run ``precision``."""
    import torch

    where = f"{accelerator.hardware.value} ({accelerator.name})"
    if precision is Precision.FP32:
        return
    if precision is Precision.INT8:
        if accelerator.device.type != "cpu":
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG,
                f"int8 (dynamic quantization of Linear layers) runs on the CPU only, not on "
                f"{where}; ask for fp16 or bf16 there",
            )
        engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
        if not engines:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG, f"torch has no quantized engine on {where} for int8"
            )
        try:
            probe = _quantize(torch.nn.Sequential(torch.nn.Linear(8, 8)))
            with torch.inference_mode():
                probe(torch.randn(2, 8))
        except BenchmarkError:
            raise
        except Exception as exc:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG, f"{where} cannot run int8: {describe(exc)}"
            ) from exc
        return

    dtype = float_dtype(precision)
    if accelerator.is_cuda and precision is Precision.BF16:
        supported = torch.cuda.is_bf16_supported(including_emulation=False)
        if not supported:
            raise BenchmarkError(
                ErrorClass.INVALID_CONFIG, f"{where} has no native bf16 support; ask for fp16"
            )
    try:
        with torch.inference_mode():
            x = torch.randn(8, 8, device=accelerator.device).to(dtype)
            y = torch.nn.functional.layer_norm(torch.softmax(x @ x, dim=-1), (8,))
            accelerator.synchronize()
            float(y.float().sum().item())
    except Exception as exc:
        raise BenchmarkError(
            ErrorClass.INVALID_CONFIG, f"{where} cannot run {precision.value}: {describe(exc)}"
        ) from exc


def apply_precision(
    model: torch.nn.Module, precision: Precision, accelerator: Accelerator
) -> torch.nn.Module:
    """The model cast (or quantized) for ``precision`` and on the device."""
    if precision is Precision.INT8:
        return _quantize(model.to("cpu"))
    return model.to(device=accelerator.device, dtype=float_dtype(precision))
