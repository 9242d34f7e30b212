"""Config models, one per task type, checked when a task is submitted.

The coordinator accepts only the types registered here; a type without a
model would be refused at submission with a message saying so, rather than
accepted and faked.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from testfleet.domain.enums import TaskType
from testfleet.domain.fields import EnvName
from testfleet.domain.json_values import Int64


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CommandConfig(_Config):
    """Run a program: ``argv`` is executed directly (no shell), in ``cwd``, with ``env`` added."""

    argv: list[Annotated[str, Field(max_length=65536)]] = Field(min_length=1, max_length=4096)
    env: dict[EnvName, Annotated[str, Field(max_length=65536)]] = Field(default_factory=dict)
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)
    output_tail_bytes: int = Field(default=65536, ge=0, le=16 * 1024 * 1024)


class DurationDistribution(StrEnum):
    """How a simulated task samples its duration."""

    LOGNORMAL = "lognormal"
    UNIFORM = "uniform"


class SampledDuration(_Config):
    """A duration sampled per attempt: lognormal(median, sigma) or uniform(low, high)."""

    distribution: DurationDistribution
    median_seconds: float | None = Field(default=None, gt=0, le=86400)
    sigma: float = Field(default=1.0, ge=0, le=10)
    low_seconds: float | None = Field(default=None, ge=0, le=86400)
    high_seconds: float | None = Field(default=None, ge=0, le=86400)
    max_seconds: float = Field(default=3600.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _parameters_fit_distribution(self) -> SampledDuration:
        if self.distribution is DurationDistribution.LOGNORMAL and self.median_seconds is None:
            raise ValueError("a lognormal duration needs median_seconds")
        if self.distribution is DurationDistribution.UNIFORM:
            if self.low_seconds is None or self.high_seconds is None:
                raise ValueError("a uniform duration needs low_seconds and high_seconds")
            if self.high_seconds < self.low_seconds:
                raise ValueError("high_seconds must be >= low_seconds")
        return self


class SimulatedConfig(_Config):
    """A task that only waits (for load tests); its results say ``is_simulated: true``.

    Give ``duration_seconds`` or a ``sampled_duration``; with neither it takes no time.
    ``fail_probability`` makes some attempts fail, to exercise retries.
    """

    duration_seconds: float | None = Field(default=None, ge=0, le=86400)
    sampled_duration: SampledDuration | None = None
    fail_probability: float = Field(default=0.0, ge=0, le=1)
    seed: Int64 | None = None

    @model_validator(mode="after")
    def _one_duration_source(self) -> SimulatedConfig:
        if self.duration_seconds is not None and self.sampled_duration is not None:
            raise ValueError("give duration_seconds or sampled_duration, not both")
        if self.duration_seconds is not None and not math.isfinite(self.duration_seconds):
            raise ValueError("duration_seconds must be finite")
        return self


def _benchmark_config() -> type[BaseModel]:
    # Imported here: domain.benchmark is a sibling with its own imports.
    from testfleet.domain.benchmark import BenchmarkConfig

    return BenchmarkConfig


def _test_config() -> type[BaseModel]:
    from testfleet.domain.pytest_tasks import TestConfig

    return TestConfig


_CONFIG_MODELS: dict[TaskType, type[BaseModel]] = {
    TaskType.COMMAND: CommandConfig,
    TaskType.SIMULATED: SimulatedConfig,
    TaskType.TEST: _test_config(),
    TaskType.BENCHMARK: _benchmark_config(),
}


class UnsupportedTaskTypeError(ValueError):
    """Raised when a task names a type that this build cannot run yet."""


def supported_task_types() -> list[TaskType]:
    """The task types this build can validate and run, in declaration order."""
    return [t for t in TaskType if t in _CONFIG_MODELS]


def config_model_for(task_type: TaskType) -> type[BaseModel]:
    """Return the config model for ``task_type`` or explain that it is not supported yet."""
    try:
        return _CONFIG_MODELS[task_type]
    except KeyError:
        supported = ", ".join(t.value for t in supported_task_types())
        raise UnsupportedTaskTypeError(
            f"task type '{task_type.value}' is not supported by this testfleet build yet "
            f"(supported: {supported})"
        ) from None
