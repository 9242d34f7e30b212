"""A simulation trace: the workers of a fleet and the tasks submitted to it.

Callers: :mod:`testfleet.simulation.generator` makes one from a seed,
:func:`load_trace` reads one from a JSON-lines file (so the same trace can be
replayed against several scheduling policies), and
:class:`testfleet.simulation.engine.Simulator` replays it against the real
coordinator state and scheduler.

File format, one JSON object a line (blank lines are skipped)::

    {"kind": "worker", "worker_id": "cpu-0", "hardware": ["cpu"], "slots": 4, "speed": 1.0}
    {"kind": "worker", "worker_id": "gpu-0", "hardware": ["cpu", "cuda"], "slots": 1}
    {"kind": "task", "task_id": "t-0", "submit_time": 0.0,
     "requirements": {"hardware": ["cuda"]}, "durations": {"cuda": 60.0}, "work": "train-7"}

A worker's **hardware class** is the most capable kind it offers (``cuda`` for
a worker with CUDA, else ``cpu``); a task's duration on a worker is
``durations[class] / speed``, and a class the task does not list falls back to
its longest listed duration (a task that never said how fast it runs on a GPU
is not assumed to run faster there). Times are seconds from the trace's start.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationError

from testfleet.domain.enums import HardwareKind
from testfleet.domain.task import (
    DEFAULT_PRIORITY,
    MAX_FALLBACKS,
    RequirementFallback,
    Requirements,
    StrictModel,
)
from testfleet.domain.task_ids import TASK_ID_PATTERN

#: Kinds ranked by how capable a worker offering them is (the class is the last it has).
_CLASS_ORDER = (HardwareKind.CPU, HardwareKind.MPS, HardwareKind.ROCM, HardwareKind.CUDA)


class TraceWorker(StrictModel):
    """One simulated worker: what it offers, how many tasks it runs at once, how fast."""

    kind: Literal["worker"] = "worker"
    worker_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    hardware: list[HardwareKind] = Field(default_factory=lambda: [HardwareKind.CPU], min_length=1)
    slots: int = Field(default=1, ge=1, le=4096)
    #: How much faster than the reference machine it runs work (2.0: half the time).
    speed: float = Field(default=1.0, gt=0, le=1000)
    #: Its GPU's name, for traces whose tasks ask for a ``gpu_model`` (CUDA workers
    #: only; None: an H100).
    gpu_model: str | None = Field(default=None, min_length=1, max_length=128)

    @cached_property
    def hardware_class(self) -> HardwareKind:
        # Cached: read for every attempt placed on the worker.
        return hardware_class(self.hardware)


class TraceTask(StrictModel):
    """One simulated task: when it is submitted, what it needs, how long it runs."""

    kind: Literal["task"] = "task"
    task_id: str = Field(pattern=TASK_ID_PATTERN)
    submit_time: float = Field(default=0.0, ge=0)
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=1000)
    requirements: Requirements = Field(default_factory=Requirements)
    #: Requirement slices tried after ``requirements`` (``TaskSpec.fallbacks``).
    fallbacks: list[RequirementFallback] = Field(default_factory=list, max_length=MAX_FALLBACKS)
    #: Seconds on a speed-1.0 worker of each hardware class.
    durations: dict[HardwareKind, Annotated[float, Field(ge=0)]] = Field(min_length=1)
    #: Which repeated work this is (tasks with the same ``work`` run the same
    #: thing, so the coordinator files their durations under one work key and
    #: learns the workers' speeds from them); None: work seen once.
    work: str | None = Field(default=None, min_length=1, max_length=128)

    def duration_on(self, worker: TraceWorker) -> float:
        """Seconds this task takes on ``worker`` (see the module docstring)."""
        base = self.durations.get(worker.hardware_class)
        if base is None:
            base = max(self.durations.values())
        return base / worker.speed


_LINE: TypeAdapter[TraceWorker | TraceTask] = TypeAdapter(
    Annotated[TraceWorker | TraceTask, Field(discriminator="kind")]
)


def hardware_class(hardware: Iterable[HardwareKind]) -> HardwareKind:
    """The most capable kind in ``hardware`` by :data:`_CLASS_ORDER` (``cpu`` if none ranks)."""
    offered = set(hardware)
    best = HardwareKind.CPU
    for kind in _CLASS_ORDER:
        if kind in offered:
            best = kind
    return best


@dataclass(frozen=True, slots=True)
class Trace:
    """Workers (all connected at time 0) and tasks (sorted by submit time, then id)."""

    workers: tuple[TraceWorker, ...]
    tasks: tuple[TraceTask, ...]

    @classmethod
    def of(cls, workers: Iterable[TraceWorker], tasks: Iterable[TraceTask]) -> Trace:
        """Check ids are unique and order the tasks; raises :class:`TraceError`."""
        workers, tasks = tuple(workers), tuple(tasks)
        _unique("worker_id", [w.worker_id for w in workers])
        _unique("task_id", [t.task_id for t in tasks])
        if not workers:
            raise TraceError('the trace has no workers: add a line with "kind": "worker"')
        return cls(workers, tuple(sorted(tasks, key=lambda t: (t.submit_time, t.task_id))))


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the line and field to fix."""


def _unique(field: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for value in ids:
        if value in seen:
            raise TraceError(f"{field} {value!r} appears twice in the trace; ids must be unique")
        seen.add(value)


def load_trace(path: Path) -> Trace:
    """Read a JSON-lines trace (format in the module docstring); raises :class:`TraceError`."""
    workers: list[TraceWorker] = []
    tasks: list[TraceTask] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise TraceError(f"cannot read trace {str(path)!r}: {error.strerror}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = _LINE.validate_python(json.loads(line))
        except json.JSONDecodeError as error:
            raise TraceError(f"{path}:{number}: not JSON ({error.msg})") from None
        except ValidationError as error:
            first = error.errors()[0]
            # The first part of the location is the line's kind (the union's tag).
            where = ".".join(str(part) for part in first["loc"][1:]) or "kind"
            raise TraceError(
                f"{path}:{number}: field {where!r}: {first['msg']} "
                '(each line is a {"kind": "worker", ...} or {"kind": "task", ...} object)'
            ) from None
        (workers if isinstance(item, TraceWorker) else tasks).append(item)  # type: ignore[arg-type]
    return Trace.of(workers, tasks)


def dump_trace(trace: Trace, path: Path) -> None:
    """Write ``trace`` as JSON lines that :func:`load_trace` reads back equal."""
    with path.open("w", encoding="utf-8") as out:
        for item in (*trace.workers, *trace.tasks):
            out.write(item.model_dump_json(exclude_defaults=False) + "\n")
