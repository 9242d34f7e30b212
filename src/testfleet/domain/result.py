"""The result a worker reports for one attempt: the design document's (docs/formats.md), plus the
attempt it belongs to and a classified error.

Callers: executors build a :class:`TaskResult`; the worker sends it in a
``result`` message; the coordinator stores it and serves it back unchanged from
``GET /api/v1/tasks/{id}``.
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from testfleet.domain.enums import ErrorClass, ResultStatus

#: Logs travel base64-encoded (docs/formats.md); this caps them per result.
MAX_LOG_BYTES = 1024 * 1024


class SimulationStatus(BaseModel):
    """Whether a result came from real hardware. Never true for a real run."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    is_simulated: bool


class TaskError(BaseModel):
    """Why an attempt did not complete, classified so retries can depend on it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    error_class: ErrorClass
    message: str = Field(max_length=16384)


class TaskResult(BaseModel):
    """One attempt's outcome in the design document's format."""

    # No inf or nan: they cannot be stored (see testfleet.domain.json_values).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    task_id: str = Field(max_length=256)
    worker_id: str = Field(max_length=256)
    status: ResultStatus
    execution_time_seconds: float = Field(ge=0)
    hardware_metrics: dict[str, Any] = Field(default_factory=dict)
    results: dict[str, Any] = Field(default_factory=dict)
    simulation_status: SimulationStatus
    logs: str = Field(default="", max_length=2 * MAX_LOG_BYTES)
    error: TaskError | None = None


def encode_logs(raw: bytes) -> str:
    """Base64-encode the last :data:`MAX_LOG_BYTES` of ``raw`` for a result."""
    return base64.b64encode(raw[-MAX_LOG_BYTES:]).decode("ascii")


def decode_logs(encoded: str) -> str:
    """Decode a result's logs for display (invalid UTF-8 is replaced, not fatal)."""
    return base64.b64decode(encoded.encode("ascii")).decode("utf-8", errors="replace")
