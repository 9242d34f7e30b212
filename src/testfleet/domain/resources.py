"""Per-task resources: what a task reserves, what a worker can allot, and the arithmetic.

Terms:

* **task resources** (:class:`TaskResources`, ``requirements.resources`` in a
  task document): memory, whole CPU cores and work-directory disk the task
  reserves on its worker *and* is held to there. Absent fields reserve nothing
  and limit nothing, so documents written before this existed mean what they
  meant. Sizes are bytes, or a string with a unit: ``"2GiB"``, ``"512MB"``,
  ``"1.5G"`` (``K``/``M``/``G``/``T`` alone, and ``KiB`` etc., are powers of
  1024; ``KB``/``MB``/``GB``/``TB`` powers of 1000).
* **allocatable** (:class:`WorkerResources`, ``capabilities.resources`` in a
  worker's hello): the totals a worker lets tasks reserve, detected from the
  machine and capped by its operator (``testfleet worker --max-task-memory``,
  ``--cpu-cores``, ``--disk``), and how it enforces each. A worker that sends
  none (an older worker) is judged by its ``memory_gb`` and logical cores, and
  its disk is unbounded.
* **amounts** (:class:`ResourceAmounts`): the plain integers the scheduler
  adds and subtracts; 0 reserves nothing.

Why they sit inside ``requirements``: the requirement set is already the
scheduler's match key, is stored as one JSON column and reaches the worker in
the ``assign`` message, so resources needed no new column, key or field on the
wire. ``min_memory_gb`` stays what it was: a bound on the machine's total,
with nothing reserved or enforced.

Callers: :mod:`testfleet.domain.task` (validation at the edge),
:mod:`testfleet.scheduling` (fit and reservations), the coordinator's worker
registry (what each worker's open attempts hold) and the worker's
:mod:`testfleet.worker.executors.resource_limits` (enforcement).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

#: Below this a task cannot even start an interpreter; a smaller limit is a typo.
MIN_MEMORY_BYTES = 16 * 1024**2
#: 1 PiB: more than any machine, far inside 64 bits.
MAX_BYTES = 1024**5
MIN_DISK_BYTES = 4096
MAX_CPU_CORES = 4096
#: What "no bound" means in :class:`ResourceAmounts` arithmetic.
UNBOUNDED = 2**62

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
SIZE_RULE = 'a whole number of bytes or a size with a unit, e.g. 2147483648, "2GiB", "512MB"'


def parse_size(value: object) -> object:
    """``"2GiB"`` → 2147483648; ints pass through; anything else is left for pydantic.

    Called as a before-validator on every size field here and by the worker
    CLI's size options, so both accept the same spellings.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_RULE}, not a boolean")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"expected {SIZE_RULE}; got {value!r}")
        return int(value)
    if not isinstance(value, str):
        return value
    match = _SIZE.match(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS or len(value) > 64:
        raise ValueError(f"expected {SIZE_RULE}; got {value[:64]!r}")
    number = float(match.group(1))
    if not math.isfinite(number):
        raise ValueError(f"expected {SIZE_RULE}; got {value[:64]!r}")
    return int(number * _UNITS[unit])


def format_size(value: int) -> str:
    """Bytes as people read them: ``31 GiB``, ``1.5 MiB``, ``512 B``."""
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= size:
            return f"{value / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{value} B"


# The bounds sit on the int inside the optional: on ``int | None`` pydantic would
# apply them to an explicit null too, and fail with a TypeError, not a 422. The
# size parser runs first, on the whole field (it passes None through).
_SIZE_HELP = ' Bytes, or a string with a unit: "2GiB", "512MB".'
MemoryBytes = Annotated[
    Annotated[int, Field(ge=MIN_MEMORY_BYTES, le=MAX_BYTES)] | None,
    BeforeValidator(parse_size),
    Field(description="Memory the task's processes may use together." + _SIZE_HELP),
]
DiskBytes = Annotated[
    Annotated[int, Field(ge=MIN_DISK_BYTES, le=MAX_BYTES)] | None,
    BeforeValidator(parse_size),
    Field(description="Disk its work directory, or any one file, may take." + _SIZE_HELP),
]


@dataclass(frozen=True, slots=True)
class ResourceAmounts:
    """Memory, cores and disk as integers: what is reserved, free or needed."""

    memory_bytes: int = 0
    cpu_cores: int = 0
    disk_bytes: int = 0

    def __add__(self, other: ResourceAmounts) -> ResourceAmounts:
        return ResourceAmounts(
            self.memory_bytes + other.memory_bytes,
            self.cpu_cores + other.cpu_cores,
            self.disk_bytes + other.disk_bytes,
        )

    def __sub__(self, other: ResourceAmounts) -> ResourceAmounts:
        return ResourceAmounts(
            self.memory_bytes - other.memory_bytes,
            self.cpu_cores - other.cpu_cores,
            self.disk_bytes - other.disk_bytes,
        )

    def __bool__(self) -> bool:
        return bool(self.memory_bytes or self.cpu_cores or self.disk_bytes)

    def fits_in(self, available: ResourceAmounts) -> bool:
        return (
            self.memory_bytes <= available.memory_bytes
            and self.cpu_cores <= available.cpu_cores
            and self.disk_bytes <= available.disk_bytes
        )


NO_RESOURCES = ResourceAmounts()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TaskResources(_Model):
    """What one task reserves on its worker and is held to there (all optional)."""

    #: The task's processes together (a cgroup where the worker has one, else
    #: a per-process address-space limit). Over it: ``out_of_memory``.
    memory_bytes: MemoryBytes = None
    #: Whole cores the task's processes are pinned to (CPU affinity).
    cpu_cores: int | None = Field(default=None, ge=1, le=MAX_CPU_CORES, strict=True)
    #: The attempt's own work directory, and any single file it writes.
    #: Over it: ``resource_limit``.
    disk_bytes: DiskBytes = None

    def amounts(self) -> ResourceAmounts:
        memory, cores, disk = self.memory_bytes, self.cpu_cores, self.disk_bytes
        if memory is None and cores is None and disk is None:
            # Most tasks reserve nothing: the shared zero (amounts are frozen)
            # rather than a new equal object per assignment.
            return NO_RESOURCES
        return ResourceAmounts(memory or 0, cores or 0, disk or 0)

    @property
    def declared(self) -> bool:
        """Whether any amount is given (cheap: the matcher asks it per match key)."""
        return (
            self.memory_bytes is not None
            or self.cpu_cores is not None
            or self.disk_bytes is not None
        )


class MemoryEnforcement(StrEnum):
    """How a worker holds a task to its memory (said in its capabilities and log)."""

    #: A memory cgroup (v1) per attempt with ``memory.limit_in_bytes``, plus the rlimit.
    CGROUP_V1 = "cgroup_v1"
    #: A memory cgroup (v2) per attempt with ``memory.max``, plus the rlimit.
    CGROUP_V2 = "cgroup_v2"
    #: ``RLIMIT_AS`` on each of the task's processes only.
    RLIMIT = "rlimit"


class WorkerResources(_Model):
    """What a worker lets tasks reserve, and how it enforces the limits."""

    memory_bytes: int = Field(ge=0, le=MAX_BYTES)
    cpu_cores: int = Field(ge=0, le=MAX_CPU_CORES)
    disk_bytes: int = Field(ge=0, le=MAX_BYTES)
    memory_enforcement: MemoryEnforcement = MemoryEnforcement.RLIMIT

    def amounts(self) -> ResourceAmounts:
        return ResourceAmounts(self.memory_bytes, self.cpu_cores, self.disk_bytes)
