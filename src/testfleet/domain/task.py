"""The task document users submit: the design document's (docs/formats.md), as written there.

Callers: the REST API validates every submitted document with :class:`TaskSpec`
(the edge), the coordinator stores it, and the worker receives it inside an
``assign`` message. Unknown fields are rejected so a typo never silently means
"no requirement".
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from testfleet.domain.backend_requirement import BackendRequirement, requirement_for
from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.json_values import shorten
from testfleet.domain.resources import TaskResources
from testfleet.domain.task_configs import config_model_for, supported_task_types
from testfleet.domain.task_ids import TASK_ID_PATTERN, TASK_ID_RULE, is_task_id

#: Seven days: longer than any real test or benchmark, short enough to catch typos.
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
DEFAULT_TIMEOUT_SECONDS = 3600.0
DEFAULT_PRIORITY = 5

TagKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
TagValue = Annotated[str, Field(max_length=256)]


class StrictModel(BaseModel):
    """Base for every document that crosses the edge: unknown fields are errors."""

    # No inf or nan: they cannot be stored (see testfleet.domain.json_values).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Requirements(StrictModel):
    """What a worker must offer to run a task (all given fields must hold).

    ``hardware`` is any-of: ``["cuda", "rocm"]`` runs on a worker with either.
    An empty list means any worker.
    """

    hardware: list[HardwareKind] = Field(default_factory=list, max_length=16)
    min_memory_gb: float | None = Field(default=None, ge=0, le=1_000_000)
    min_cuda_compute: float | None = Field(default=None, ge=0, le=100)
    min_gpu_memory_gb: float | None = Field(default=None, ge=0, le=1_000_000)
    gpu_model: str | None = Field(default=None, min_length=1, max_length=128)
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=64)
    #: Workers that must not run it (a flaky test's rerun avoids the worker it
    #: failed on). Any other matching worker may.
    exclude_workers: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=1024
    )
    #: Memory, cores and disk the task reserves on its worker and is held to
    #: there (see :mod:`testfleet.domain.resources`); absent: none.
    resources: TaskResources = Field(default_factory=TaskResources)
    #: A benchmark's backend beyond torch (``domain/backend_requirement.py``):
    #: filled in from its config at validation, so placement sees it.
    backend: BackendRequirement | None = None

    def key(self) -> str:
        """A canonical string: equal requirements give equal keys (the scheduler caches by it)."""
        return self.model_dump_json(exclude_defaults=True)


class RetryPolicy(StrictModel):
    """How often a failed or timed-out attempt is tried again, and after what pause."""

    max_retries: int = Field(default=0, ge=0, le=100)
    retry_delay_seconds: float = Field(default=0.0, ge=0, le=MAX_TIMEOUT_SECONDS)


#: At most this many fallback slices after ``requirements`` (LUCI Swarming allows 8 slices).
MAX_FALLBACKS = 8


class RequirementFallback(StrictModel):
    """A requirement set tried once the task has waited ``after_seconds`` since it was
    submitted (a task *slice*, as in LUCI Swarming): ``requirements`` is slice 0,
    ``fallbacks[i]`` is slice ``i + 1``. See :mod:`testfleet.domain.task_slices`."""

    after_seconds: float = Field(ge=0, le=MAX_TIMEOUT_SECONDS)
    requirements: Requirements = Field(default_factory=Requirements)

    @field_validator("after_seconds", mode="before")
    @classmethod
    def _after_is_a_number(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("after_seconds must be a number of seconds, not a boolean")
        return value


#: Every task type's value, for the check of a submitted ``type`` (made once, not per task).
_TASK_TYPE_VALUES = frozenset(t.value for t in TaskType)


class TaskSpec(StrictModel):
    """One task as submitted. ``config`` is checked against the model for ``type``."""

    task_id: str = Field(
        default_factory=lambda: f"task-{uuid.uuid4().hex[:16]}", pattern=TASK_ID_PATTERN
    )
    type: TaskType
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=1000)
    requirements: Requirements = Field(default_factory=Requirements)
    config: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0, le=MAX_TIMEOUT_SECONDS)
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    #: Requirement sets tried in turn while the task waits (see RequirementFallback).
    fallbacks: list[RequirementFallback] = Field(default_factory=list, max_length=MAX_FALLBACKS)
    #: May the task run twice at once (a speculative copy of a straggler,
    #: ``coordinator/speculation.py``)? None: the type's default
    #: (:func:`is_idempotent`): tests and benchmarks yes, commands no.
    idempotent: bool | None = None
    #: The client's estimate of its run time (``testfleet run`` sets it per chunk
    #: from stored test durations); without it, past runs of the same work are used.
    expected_seconds: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_SECONDS)

    @field_validator("type", mode="before")
    @classmethod
    def _type_is_known(cls, value: object) -> object:
        if isinstance(value, str) and value not in _TASK_TYPE_VALUES:
            supported = ", ".join(t.value for t in supported_task_types())
            raise ValueError(f"unknown task type {value!r}; this build runs: {supported}")
        return value

    @field_validator("task_id", mode="before")
    @classmethod
    def _task_id_is_safe(cls, value: object) -> object:
        # Said in words: the pattern alone would be quoted as a regular expression.
        if isinstance(value, str) and not is_task_id(value):
            raise ValueError(f"{TASK_ID_RULE}; got {shorten(value)}")
        return value

    @field_validator("timeout_seconds", mode="before")
    @classmethod
    def _timeout_is_a_number(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("timeout_seconds must be a number of seconds, not a boolean")
        return value

    @model_validator(mode="after")
    def _fallbacks_in_order(self) -> TaskSpec:
        previous = 0.0
        for index, fallback in enumerate(self.fallbacks):
            if fallback.after_seconds <= previous:
                # Raised at the field's own location (a plain ValueError here would be
                # placed at the task's root), so the API names fallbacks[i].after_seconds.
                problem = PydanticCustomError(
                    "fallbacks_order",
                    "fallbacks[{index}].after_seconds is {after} but must be greater than "
                    "{previous} (the previous slice's): list fallbacks in the order they are "
                    "tried, each after a longer wait",
                    {
                        "index": index,
                        "after": f"{fallback.after_seconds:g}",
                        "previous": f"{previous:g}",
                    },
                )
                detail: InitErrorDetails = {
                    "type": problem,
                    "loc": ("fallbacks", index, "after_seconds"),
                    "input": fallback.after_seconds,
                }
                raise ValidationError.from_exception_data("TaskSpec", [detail])
            previous = fallback.after_seconds
        return self

    @model_validator(mode="after")
    def _config_matches_type(self) -> TaskSpec:
        model = config_model_for(self.type)
        # Validate (and so reject unknown or mistyped config fields) but keep the
        # user's dict as stored, so the document reads back as it was written.
        try:
            config = model.model_validate(self.config)
        except ValidationError as exc:
            raise _under_config(exc) from None
        self._place_backend(config)
        # Only a benchmark's config has a device; asked first, as every submitted
        # task passes here and a missing attribute is slow on a pydantic model.
        device = getattr(config, "device", None) if self.type is TaskType.BENCHMARK else None
        if device is not None and device is not HardwareKind.CPU:
            slices = [("requirements", self.requirements)] + [
                (f"fallbacks[{i}].requirements", f.requirements)
                for i, f in enumerate(self.fallbacks)
            ]
            for where, requirements in slices:
                if device not in requirements.hardware:
                    # The scheduler places by requirements; a device pinned only in
                    # the config would land on any worker and fail there.
                    raise ValueError(
                        f"config.device is {device.value!r} but {where}.hardware does not "
                        f'include it: add "hardware": ["{device.value}"] there'
                    )
        return self

    def _place_backend(self, config: BaseModel) -> None:
        """Set every slice's ``requirements.backend`` from a benchmark's config
        (issue 15), so the task is placed only where its backend runs."""
        # Every submitted task passes here: most are not benchmarks and name no
        # backend, and they should not pay for the slice list below.
        if (
            self.type is not TaskType.BENCHMARK
            and self.requirements.backend is None
            and not self.fallbacks
        ):
            return
        from testfleet.domain.benchmark import BenchmarkConfig

        wanted = requirement_for(config) if isinstance(config, BenchmarkConfig) else None
        slices = [("requirements", self.requirements)] + [
            (f"fallbacks[{i}].requirements", f.requirements) for i, f in enumerate(self.fallbacks)
        ]
        for where, requirements in slices:
            given = requirements.backend
            if given is not None and given != wanted:
                said = wanted.describe() if wanted is not None else "no backend beyond torch"
                raise ValueError(
                    f"{where}.backend is {given.describe()} but the config asks for {said}: "
                    "leave requirements.backend out, it is set from config.backend"
                )
        if wanted is None:
            return
        # A frozen model: the fields are replaced while it is being built
        # (this validator), never after; copies keep the documents' own values.
        object.__setattr__(
            self, "requirements", self.requirements.model_copy(update={"backend": wanted})
        )
        fallbacks = [
            f.model_copy(
                update={"requirements": f.requirements.model_copy(update={"backend": wanted})}
            )
            for f in self.fallbacks
        ]
        object.__setattr__(self, "fallbacks", fallbacks)


def is_idempotent(spec: TaskSpec) -> bool:
    """May ``spec`` run on two workers at once? Its own ``idempotent`` if given, else by
    type: a test chunk or benchmark only reads its inputs and reports (a second run is
    harmless), a command may do anything (deploy, push, write a shared file).

    Called by the coordinator's straggler check (``coordinator/speculation.py``)."""
    if spec.idempotent is not None:
        return spec.idempotent
    return spec.type in (TaskType.TEST, TaskType.BENCHMARK, TaskType.SIMULATED)


def _under_config(exc: ValidationError) -> ValidationError:
    """``exc`` (the config model's errors) with every location under ``config``.

    The config is checked inside the task's model validator, whose errors
    pydantic places at the task's root: a user would read ``tasks[0].argv``
    for what they wrote as ``tasks[0].config.argv``.
    """
    details: list[InitErrorDetails] = []
    for error in exc.errors():
        detail: InitErrorDetails = {
            "type": error["type"],
            "loc": ("config", *error["loc"]),
            "input": error["input"],
        }
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        details.append(detail)
    return ValidationError.from_exception_data(exc.title, details)
