"""The runner's wire format: one JSON request on stdin, JSON lines on stdout.

Callers: the benchmark executor writes a :class:`RunnerRequest` to the child's
stdin and parses each stdout line with :func:`parse_line`; the runner reads
the request with :func:`read_request` and writes lines with
:func:`encode_line`.

The runner writes, in order:

* ``setup`` once the model is built and on its device: the device name, the
  sizes it plans to run and the conditions of the run;
* one ``batch`` line per batch size *as soon as it is measured or failed*, so
  that a child killed later (the OOM killer at a large size) leaves every
  smaller size's result with the parent;
* ``final`` when the sweep ends: why it ended and the load after the run;
* or, instead of everything after the failure, one ``fatal`` line when the run
  cannot start (unknown model, precision the device cannot run, no device).

Everything else the child prints (its logs, library warnings, even C code
writing to file descriptor 1) goes to stderr: the runner moves fd 1 onto fd 2
before importing anything and keeps a private duplicate for these lines.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from testfleet.domain.benchmark import (
    BatchSizeError,
    BatchSizeMeasurement,
    BenchmarkConfig,
    OutputCheck,
)
from testfleet.domain.enums import ErrorClass, HardwareKind
from testfleet.worker.benchmarking.metrics import DEFAULT_INTERVAL_SECONDS, MetricSeries

PROTOCOL_VERSION = 1
#: A longer line is not ours (or is broken): it is dropped, not parsed.
MAX_LINE_BYTES = 1024 * 1024


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunnerRequest(_Line):
    """What the runner is asked to do (its stdin)."""

    protocol_version: int = PROTOCOL_VERSION
    task_id: str = Field(max_length=256)
    config: BenchmarkConfig
    device: HardwareKind
    metrics_interval_seconds: float = Field(default=DEFAULT_INTERVAL_SECONDS, gt=0, le=60)


class SetupLine(_Line):
    type: Literal["setup"] = "setup"
    model_source: Literal["config", "local_path"]
    device: str = Field(max_length=64, description="torch's name for it: cpu, cuda:0, mps")
    device_name: str = Field(max_length=256)
    planned_batch_sizes: list[int]
    conditions: dict[str, Any] = Field(default_factory=dict)
    #: A non-torch backend's outputs against torch's (issue 15); None for torch,
    #: or with ``check_outputs`` off.
    output_check: OutputCheck | None = None
    #: Why the check failed, in words (None when it passed).
    output_check_message: str | None = Field(default=None, max_length=4096)


class BatchLine(_Line):
    """One batch size: a measurement or an error, and the metrics sampled meanwhile."""

    type: Literal["batch"] = "batch"
    batch_size: int = Field(ge=1)
    measurement: BatchSizeMeasurement | None = None
    error: BatchSizeError | None = None
    metrics: dict[str, MetricSeries] = Field(default_factory=dict)


class FinalLine(_Line):
    type: Literal["final"] = "final"
    stop_reason: str = Field(max_length=64)
    skipped_batch_sizes: list[int] = Field(default_factory=list)
    conditions: dict[str, Any] = Field(default_factory=dict)


class FatalLine(_Line):
    type: Literal["fatal"] = "fatal"
    error_class: ErrorClass
    message: str = Field(max_length=4096)


RunnerLine = Annotated[SetupLine | BatchLine | FinalLine | FatalLine, Field(discriminator="type")]
_LINE: TypeAdapter[SetupLine | BatchLine | FinalLine | FatalLine] = TypeAdapter(RunnerLine)


def encode_line(line: SetupLine | BatchLine | FinalLine | FatalLine) -> bytes:
    return line.model_dump_json().encode("utf-8") + b"\n"


def parse_line(raw: bytes) -> SetupLine | BatchLine | FinalLine | FatalLine | None:
    """One stdout line, or None when it is not a valid runner line (it is then ignored)."""
    raw = raw.strip()
    if not raw or len(raw) > MAX_LINE_BYTES:
        return None
    try:
        return _LINE.validate_json(raw)
    except pydantic.ValidationError:
        return None


def encode_request(request: RunnerRequest) -> bytes:
    return request.model_dump_json().encode("utf-8")


def read_request(raw: bytes) -> RunnerRequest:
    """Parse the stdin document; raises pydantic.ValidationError naming the bad field."""
    return RunnerRequest.model_validate_json(raw)
