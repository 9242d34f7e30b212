"""Model benchmarks: the task's config, the result it reports, the rows it stores.

Callers: the coordinator validates ``type: benchmark`` tasks with
:class:`BenchmarkConfig` at submission (registered in ``task_configs``); the
worker's benchmark executor reports a :class:`BenchmarkOutcome` as the result's
``results`` document (docs/formats.md: ``results.batch_sizes["1"].latency_ms`` and
so on, plus percentiles, errors and the conditions of the run); the
coordinator's state turns a counted outcome into :class:`BenchmarkRow` s, one
per batch size, which the store keeps in ``benchmark_results`` beside the whole
document for comparisons across hardware and over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from testfleet.domain.enums import ErrorClass, HardwareKind
from testfleet.domain.json_values import INT64_MAX, Int64

#: The models the worker can build from their configuration alone (no download).
KNOWN_MODELS = (
    "bert-base-uncased",
    "gpt2",
    "t5-small",
    "vit-base-patch16-224",
    "whisper-tiny",
)
#: ``batch_sizes: "auto"`` doubles from 1 up to at most this.
DEFAULT_AUTO_MAX_BATCH = 1024


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    #: Dynamic quantization of Linear layers; CPU only.
    INT8 = "int8"


class BenchmarkBackend(StrEnum):
    """What runs the model's forward pass (issue 15).

    ``torch``: the model itself, on ``device``. ``onnxruntime``: the same model
    exported to ONNX on the worker, run by ONNX Runtime with ``provider``.
    ``openvino``: that export compiled by OpenVINO for ``backend_device``.
    ``browser``: the export run in headless Chromium (onnxruntime-web) on
    ``backend_device`` ``wasm`` or ``webgpu``.
    """

    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    BROWSER = "browser"


#: ONNX Runtime's provider when the task names none.
DEFAULT_ONNX_PROVIDER = "CPUExecutionProvider"
#: OpenVINO's device when the task names none.
DEFAULT_OPENVINO_DEVICE = "CPU"
#: The browser backend's devices (WebAssembly, WebGPU); its default is the first.
BROWSER_DEVICES = ("wasm", "webgpu")
#: ``output_tolerance`` when the task names none: fp32 backends agree with torch
#: to ~1e-5 on these models; 1e-3 leaves room for reordered reductions.
DEFAULT_OUTPUT_TOLERANCE = 1e-3


class OutputCheckStatus(StrEnum):
    """A ``benchmark_results.output_check`` value (NULL where nothing was compared)."""

    PASSED = "passed"
    FAILED = "failed"


class OutputCheck(BaseModel):
    """How a backend's outputs compared with torch's on the same weights and inputs.

    Filled in by the worker's runner (``worker/benchmarking/output_check.py``)
    for every non-torch backend with ``check_outputs``; a check that did not
    pass fails the attempt with ``output_mismatch`` (figures still reported).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    reference: Literal["torch"] = "torch"
    max_abs_diff: float = Field(ge=0)
    tolerance: float = Field(gt=0)
    passed: bool
    outputs_compared: int = Field(ge=0)
    #: The largest ``|diff| / max(|reference|, 1)``: the same test scaled for outputs
    #: far from 1 (logits), so a large logit's rounding is not a mismatch.
    max_rel_diff: float | None = Field(default=None, ge=0)
    #: The batch size the compared outputs were computed at.
    batch_size: int | None = Field(default=None, ge=1)

    @property
    def status(self) -> OutputCheckStatus:
        return OutputCheckStatus.PASSED if self.passed else OutputCheckStatus.FAILED


BatchSize = Annotated[int, Field(ge=1, le=65536)]
#: A batch size as a key of a result's ``batch_sizes`` (JSON keys are strings);
#: the coordinator turns it into a ``benchmark_results.batch_size`` INTEGER.
BatchSizeKey = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,8}$")]
OverrideValue = Int64 | float | str | bool


class BenchmarkConfig(BaseModel):
    """``config`` of a ``type: benchmark`` task (the design document's plus what a run needs).

    ``model`` is a hub name from :data:`KNOWN_MODELS` (built from its
    configuration with random weights: nothing is downloaded) or, with
    ``model_path``, a local directory on the worker holding a saved model.
    ``config_overrides`` change the model's configuration (e.g. fewer layers
    for a quick run). The device is the hardware the task was matched to: the
    first kind in ``requirements.hardware`` that the worker has, else the CPU;
    ``device`` pins it.

    ``backend`` (issue 15) chooses what runs the model: torch (the default),
    ONNX Runtime with ``provider``, OpenVINO on ``backend_device``, or the
    browser on ``backend_device``; a non-torch backend's outputs are compared
    with torch's on the same weights and inputs (``check_outputs``) within
    ``output_tolerance``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = Field(min_length=1, max_length=256)
    model_path: str | None = Field(default=None, min_length=1, max_length=4096)
    batch_sizes: list[BatchSize] | Literal["auto"] = Field(default_factory=lambda: [1])
    precision: Precision = Precision.FP32
    iterations: int = Field(default=20, ge=1, le=100_000)
    warmup: int = Field(default=3, ge=0, le=10_000)
    sequence_length: int = Field(default=128, ge=1, le=65536)
    image_size: int | None = Field(default=None, ge=8, le=8192)
    device: HardwareKind | None = None
    max_batch_size: int = Field(default=DEFAULT_AUTO_MAX_BATCH, ge=1, le=65536)
    config_overrides: dict[str, OverrideValue] = Field(default_factory=dict, max_length=64)
    threads: int | None = Field(default=None, ge=1, le=1024)
    backend: BenchmarkBackend = BenchmarkBackend.TORCH
    backend_device: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:,()-]+$"
    )
    provider: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+ExecutionProvider$"
    )
    check_outputs: bool = True
    output_tolerance: float = Field(default=DEFAULT_OUTPUT_TOLERANCE, gt=0, le=1)

    @model_validator(mode="after")
    def _backend_fields_fit(self) -> BenchmarkConfig:
        backend = self.backend
        if self.provider is not None and backend is not BenchmarkBackend.ONNXRUNTIME:
            raise ValueError(
                f"config.provider: only for backend onnxruntime (this task's backend is "
                f"{backend.value}); remove provider or set backend to onnxruntime"
            )
        if self.device is not None and backend is not BenchmarkBackend.TORCH:
            where = "provider" if backend is BenchmarkBackend.ONNXRUNTIME else "backend_device"
            raise ValueError(
                f"config.device: only for backend torch (backend {backend.value} runs where "
                f"its {where} says); remove device"
            )
        if self.backend_device is not None:
            if backend in (BenchmarkBackend.TORCH, BenchmarkBackend.ONNXRUNTIME):
                where = "device" if backend is BenchmarkBackend.TORCH else "provider"
                raise ValueError(
                    f"config.backend_device: only for backends openvino and browser (this "
                    f"task's backend is {backend.value}, which is placed by {where}); remove "
                    f"backend_device"
                )
            if backend is BenchmarkBackend.BROWSER and self.backend_device not in BROWSER_DEVICES:
                raise ValueError(
                    f"config.backend_device: the browser backend runs on "
                    f"{' or '.join(BROWSER_DEVICES)}, not {self.backend_device!r}"
                )
        return self

    @property
    def onnx_provider(self) -> str:
        """The ONNX Runtime execution provider to use (the default when none is named)."""
        return self.provider or DEFAULT_ONNX_PROVIDER

    @property
    def resolved_backend_device(self) -> str | None:
        """The OpenVINO or browser device to use (its default when none is named);
        None for torch and onnxruntime."""
        if self.backend is BenchmarkBackend.OPENVINO:
            return self.backend_device or DEFAULT_OPENVINO_DEVICE
        if self.backend is BenchmarkBackend.BROWSER:
            return self.backend_device or BROWSER_DEVICES[0]
        return None

    @field_validator("batch_sizes")
    @classmethod
    def _sizes_are_distinct(cls, value: list[int] | str) -> list[int] | str:
        if isinstance(value, list):
            if not value:
                raise ValueError('give at least one batch size, or "auto"')
            if len(set(value)) != len(value):
                raise ValueError("batch sizes must not repeat")
            return sorted(value)
        return value


class BatchSizeMeasurement(BaseModel):
    """Timings of one batch size (the result document's three fields, and percentiles)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    latency_ms: float = Field(ge=0, description="mean over the timed iterations")
    latency_p50_ms: float = Field(ge=0)
    latency_p90_ms: float = Field(ge=0)
    latency_p99_ms: float = Field(ge=0)
    throughput_items_per_second: float = Field(ge=0)
    memory_mb: float = Field(ge=0, description="CUDA allocator peak on GPU, process RSS on CPU")
    iterations: int = Field(ge=1, le=INT64_MAX)


class BatchSizeError(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    error_class: ErrorClass
    message: str = Field(max_length=4096)


class BenchmarkOutcome(BaseModel):
    """A benchmark result's ``results`` document."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["model_benchmark"] = "model_benchmark"
    model: str
    model_source: Literal["config", "local_path"]
    hardware: HardwareKind
    device: str
    device_name: str
    precision: Precision
    auto_batch_size: bool
    batch_sizes: dict[BatchSizeKey, BatchSizeMeasurement] = Field(default_factory=dict)
    errors: dict[BatchSizeKey, BatchSizeError] = Field(default_factory=dict)
    optimal_batch_size: int | None = Field(default=None, ge=1, le=INT64_MAX)
    conditions: dict[str, Any] = Field(default_factory=dict)
    backend: BenchmarkBackend = BenchmarkBackend.TORCH
    output_check: OutputCheck | None = None


@dataclass(frozen=True, slots=True)
class BenchmarkRow:
    """One row of ``benchmark_results``: one batch size of one counted benchmark result."""

    attempt_id: int
    batch_size: int
    task_id: str
    worker_id: str
    recorded_time: float
    model: str
    #: What else shapes the figures: config overrides, a local path, the input
    #: size (e.g. ``"num_hidden_layers=2 seq=64"``). Runs are only compared
    #: with runs of the same variant.
    variant: str
    hardware: str
    device_name: str
    precision: str
    is_simulated: bool
    latency_ms: float | None
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    throughput_items_per_second: float | None
    memory_mb: float | None
    error_class: str | None
    error_message: str | None
    torch_version: str | None
    transformers_version: str | None
    #: Set when the machine was busy as the run started (see :func:`load_note`):
    #: its figures may be slower than the same hardware's on a quiet machine.
    load_note: str | None
    #: What ran the model (a :class:`BenchmarkBackend` value); rows from before
    #: issue 15 are torch's.
    backend: str = BenchmarkBackend.TORCH.value
    #: The run's output check against torch (an :class:`OutputCheckStatus` value),
    #: None where nothing was compared (torch itself, or check_outputs off).
    output_check: str | None = None
    #: The check's largest absolute difference from torch's outputs.
    output_max_abs_diff: float | None = None


#: CPU use of the whole machine (by others: the model is already built) just
#: before the first timed pass, above which a run is marked busy. A quiet
#: machine reads a few percent; 25 % is a core of four kept busy by something else.
BUSY_CPU_PERCENT = 25.0


def load_note(conditions: dict[str, Any]) -> str | None:
    """Why a run's figures may be pessimistic, from the load the runner recorded
    before it started (``conditions["load_before"]``); None for a quiet machine.

    Called for each counted benchmark result (the note is kept in every one of
    its ``benchmark_results`` rows) and wherever a result is shown.
    """
    before = conditions.get("load_before")
    if not isinstance(before, dict):
        return None
    cpu = before.get("cpu_percent")
    if not isinstance(cpu, int | float) or isinstance(cpu, bool) or cpu < BUSY_CPU_PERCENT:
        return None
    note = f"the machine was busy as the run started: CPU {cpu:.0f} %"
    averages = before.get("load_average")
    if isinstance(averages, list) and averages and isinstance(averages[0], int | float):
        note += f", load average {averages[0]:g}"
    return note + "; figures may be slower than on a quiet machine"


def benchmark_rows(
    *,
    attempt_id: int,
    task_id: str,
    worker_id: str,
    recorded_time: float,
    results: dict[str, Any],
    is_simulated: bool,
) -> list[BenchmarkRow]:
    """The rows of a benchmark result's ``results`` document; [] if it is not one
    (a run that failed before measuring anything reports no outcome)."""
    try:
        outcome = BenchmarkOutcome.model_validate(results)
    except ValidationError:
        return []
    conditions = outcome.conditions
    note = load_note(conditions)
    check = outcome.output_check

    def row(
        size: str, measured: BatchSizeMeasurement | None, error: BatchSizeError | None
    ) -> BenchmarkRow:
        return BenchmarkRow(
            attempt_id=attempt_id,
            batch_size=int(size),
            task_id=task_id,
            worker_id=worker_id,
            recorded_time=recorded_time,
            model=outcome.model,
            variant=benchmark_variant(outcome),
            hardware=outcome.hardware.value,
            device_name=outcome.device_name,
            precision=outcome.precision.value,
            is_simulated=is_simulated,
            latency_ms=measured.latency_ms if measured else None,
            latency_p50_ms=measured.latency_p50_ms if measured else None,
            latency_p90_ms=measured.latency_p90_ms if measured else None,
            latency_p99_ms=measured.latency_p99_ms if measured else None,
            throughput_items_per_second=(
                measured.throughput_items_per_second if measured else None
            ),
            memory_mb=measured.memory_mb if measured else None,
            error_class=error.error_class.value if error else None,
            error_message=error.message if error else None,
            torch_version=_text(conditions.get("torch_version")),
            transformers_version=_text(conditions.get("transformers_version")),
            load_note=note,
            backend=outcome.backend.value,
            output_check=check.status.value if check is not None else None,
            output_max_abs_diff=check.max_abs_diff if check is not None else None,
        )

    rows = [row(size, measured, None) for size, measured in outcome.batch_sizes.items()]
    rows += [
        row(size, None, error)
        for size, error in outcome.errors.items()
        if size not in outcome.batch_sizes
    ]
    return sorted(rows, key=lambda r: r.batch_size)


#: Input-size conditions the runner records, and how a variant spells them.
_SHAPE_CONDITIONS = (
    ("sequence_length", "seq"),
    ("image_size", "image"),
    ("audio_frames", "frames"),
)


def benchmark_variant(outcome: BenchmarkOutcome) -> str:
    """The settings besides model, device and precision that change the figures.

    A 2-layer BERT at sequence length 64 is not bert-base-uncased at 128: the
    comparison and history group by this, so such runs are never averaged,
    compared or trended as one.
    """
    conditions = outcome.conditions
    parts: list[str] = []
    if outcome.model_source == "local_path" and conditions.get("model_path"):
        parts.append(f"path={conditions['model_path']}")
    overrides = conditions.get("config_overrides") or {}
    if isinstance(overrides, dict):
        parts += [f"{key}={overrides[key]}" for key in sorted(overrides)]
    parts += [
        f"{label}={conditions[key]}"
        for key, label in _SHAPE_CONDITIONS
        if conditions.get(key) is not None
    ]
    return " ".join(parts)


def _text(value: object) -> str | None:
    return None if value is None else str(value)
