"""The model exported to ONNX on the worker: what ONNX Runtime, OpenVINO and the
browser backend run.

Callers: the runner's backend path (:mod:`..backend_run`) exports the same
torch module its torch reference runs (built from the task's configuration
with the fixed seed: same weights), into a temporary directory of the attempt
that it deletes afterwards; the backends load the file.

How: ``torch.onnx.export(..., dynamo=True)`` (torch.export, then onnxscript's
translation). The older TorchScript exporter was tried first and cannot export
GPT-2 or Whisper with transformers 5 (``aten::diff`` has no ONNX symbolic); the
dynamo exporter exports all five known models. The model is wrapped so that its
tensors are positional parameters named after the inputs (``input_ids``,
``attention_mask``...) and its non-tensor arguments (``use_cache=False``,
``interpolate_pos_encoding``) are fixed; the batch dimension of every input is
dynamic, so one export runs every batch size. The export's one output is the
model's first (``logits`` for language models, ``last_hidden_state`` for
encoders): the tensor the output check compares.

The example batch is 2, never 1: torch.export specialises a dimension whose
example is 1 to the constant 1.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testfleet.domain.enums import ErrorClass
from testfleet.worker.benchmarking.errors import BenchmarkError, describe

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: At most this many tensor inputs (the known models take one or two).
MAX_INPUTS = 4
#: The largest batch size the export accepts (the config's own limit).
MAX_BATCH = 65536
#: The batch size of the example inputs the export traces (see the module docstring).
EXAMPLE_BATCH = 2


@dataclass(frozen=True)
class ExportedModel:
    """An ONNX file and what a backend needs to feed it."""

    path: Path
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    opset: int
    #: Seconds the export took (a condition of the run, not a benchmark figure).
    seconds: float = 0.0
    exporter: str = "torch.onnx.export(dynamo=True)"


def _first_output_name(output: Any) -> str:
    keys = getattr(output, "keys", None)
    if callable(keys):
        names = list(keys())
        if names:
            return str(names[0])
    return "output"


def _wrapper(model: torch.nn.Module, names: tuple[str, ...], call_kwargs: Mapping[str, Any]) -> Any:
    """The model with its tensor inputs as positional parameters (torch.export
    traces positional arguments; a ``*args`` forward cannot take per-input
    dynamic shapes)."""
    import torch

    fixed = dict(call_kwargs)

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            a: torch.Tensor,
            b: torch.Tensor | None = None,
            c: torch.Tensor | None = None,
            d: torch.Tensor | None = None,
        ) -> torch.Tensor:
            given = (a, b, c, d)[: len(names)]
            output = self.model(**dict(zip(names, given, strict=True)), **fixed, return_dict=True)
            first: torch.Tensor = output[0]
            return first

    return Wrapped().eval()


def export_onnx(
    model: torch.nn.Module,
    inputs: Mapping[str, torch.Tensor],
    path: Path,
    *,
    call_kwargs: Mapping[str, Any] | None = None,
) -> ExportedModel:
    """Export ``model`` (eval mode, on the CPU) to ``path`` with a dynamic batch dimension.

    ``inputs`` are example tensors (batch :data:`EXAMPLE_BATCH`) keyed by the
    forward's parameter names, in the order the export takes them;
    ``call_kwargs`` are the forward's other arguments. An export the exporter
    refuses is ``invalid_config`` (the model, not the worker, is the problem).
    """
    import time

    import torch

    names = tuple(inputs)
    if not 1 <= len(names) <= MAX_INPUTS:
        raise BenchmarkError(
            ErrorClass.INVALID_CONFIG,
            f"the ONNX export takes 1 to {MAX_INPUTS} tensor inputs, not {len(names)}",
        )
    wrapped = _wrapper(model, names, call_kwargs or {})
    args = tuple(inputs.values())
    with torch.inference_mode():
        output_name = _first_output_name(model(**inputs, **(call_kwargs or {}), return_dict=True))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    started = time.perf_counter()
    log.info("exporting %s to ONNX (%s)", type(model).__name__, ", ".join(names))
    chatter = io.StringIO()
    try:
        # The exporter prints its progress to stdout and warns about every
        # optional library it does not find; kept out of the runner's logs.
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(chatter),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                args,
                str(path),
                input_names=list(names),
                output_names=[output_name],
                dynamic_shapes=tuple({0: batch} for _ in names),
                dynamo=True,
                report=False,
                verbose=False,
            )
    except ImportError:
        raise
    except Exception as exc:
        raise BenchmarkError(
            ErrorClass.INVALID_CONFIG,
            f"exporting {type(model).__name__} to ONNX failed: {describe(exc)}",
        ) from exc
    seconds = time.perf_counter() - started
    return ExportedModel(
        path=path,
        input_names=names,
        output_names=(output_name,),
        opset=_opset(path),
        seconds=round(seconds, 3),
    )


def _opset(path: Path) -> int:
    """The default-domain opset the file declares (0 if it declares none)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0
