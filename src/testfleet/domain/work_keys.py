"""Work keys: which finished attempts did *the same work*, so their durations compare.

Callers: :mod:`testfleet.coordinator.worker_speed` files every completed
attempt's duration under its work key to measure each worker's speed against
the fleet's, :mod:`testfleet.coordinator.task_queue` puts a queued task's key
on its :class:`~testfleet.scheduling.view.PendingTask` (so a policy can look up
how long that work took before), and :mod:`testfleet.store.speed_queries`
rebuilds the same keys from history at start-up. All pure.

The keys (a prefix per kind, so kinds never collide):

* a pytest test: ``test|<project key>|<node id>``, one per test, from a chunk's
  per-test durations (a chunk's own set of tests rarely repeats, its tests do);
  the project key is the one per-test duration history is kept under
  (:meth:`~testfleet.domain.pytest_tasks.ProjectSource.key`);
* a benchmark: ``benchmark|<hash>`` of what decides how long it runs: model (or
  path), batch sizes, sequence length, image size, precision, iterations,
  warm-up, overrides and threads. The backend is the hardware class, which
  the speed books keep beside the key;
* anything else (commands, simulated tasks, a whole pytest chunk):
  ``<type>|<hash>`` of the canonical JSON of its config.

The hash is the first 16 hex digits of SHA-256 over canonical JSON (sorted keys,
no spaces): the same config always gives the same key, on any coordinator.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.task import TaskSpec

#: Benchmark config fields that decide how long a run takes (the rest, such as
#: ``device`` or ``max_batch_size`` under fixed sizes, do not change the work).
_BENCHMARK_FIELDS = (
    "model",
    "model_path",
    "batch_sizes",
    "sequence_length",
    "image_size",
    "precision",
    "iterations",
    "warmup",
    "config_overrides",
    "threads",
)


# One encoder for every key: ``json.dumps`` with options other than its defaults
# builds a new ``JSONEncoder`` per call, about a sixth of encoding a small config
# (every task's keys are worked out from one: issue 14's simulator aim). The
# encoder keeps no state between calls, so sharing it changes no output.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def canonical_json(config: dict[str, Any]) -> str:
    """``config`` as canonical JSON: sorted keys, no spaces (what the keys are made of)."""
    return _CANONICAL.encode(config)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def config_hash(config: dict[str, Any]) -> str:
    """16 hex digits of SHA-256 over ``config`` as canonical JSON."""
    return _hash(canonical_json(config))


def work_key(task_type: TaskType, config: dict[str, Any]) -> str:
    """The work key of a whole task of ``task_type`` with ``config`` (see the module docstring)."""
    if task_type is TaskType.BENCHMARK:
        picked = {name: config[name] for name in _BENCHMARK_FIELDS if name in config}
        return f"benchmark|{config_hash(picked)}"
    return f"{task_type.value}|{config_hash(config)}"


def spec_work_key(spec: TaskSpec) -> str:
    """:func:`work_key` of a submitted task."""
    return work_key(spec.type, spec.config)


def duration_key(spec: TaskSpec) -> str:
    """What the straggler estimate (:mod:`testfleet.coordinator.speculation`) counts
    as the same work: the type and the whole config as canonical JSON, unhashed
    (every config field, where :func:`work_key` keeps only a benchmark's
    duration-deciding ones)."""
    return f"{spec.type.value}|{canonical_json(spec.config)}"


def spec_keys(spec: TaskSpec) -> tuple[str, str]:
    """``(spec_work_key(spec), duration_key(spec))`` from one JSON encoding of the
    config (the coordinator keeps both per task: ``TaskRecord``)."""
    text = canonical_json(spec.config)
    prefix = spec.type.value
    duration = f"{prefix}|{text}"
    if spec.type is TaskType.BENCHMARK:
        return spec_work_key(spec), duration
    return f"{prefix}|{_hash(text)}", duration


def node_work_key(project_key: str, node_id: str) -> str:
    """The work key of one pytest test of a project (see the module docstring)."""
    return f"test|{project_key}|{node_id}"


@dataclass(frozen=True, slots=True)
class SpeedSample:
    """One finished piece of work: who did it, on what class, which work, how long.

    Read from history at start-up (``store/speed_queries.py``) and replayed into
    the coordinator's speed books (``coordinator/worker_speed.py``)."""

    worker_id: str
    hardware: HardwareKind
    work_key: str
    seconds: float


#: Kinds ranked by how capable a worker offering them is (its class is the last it has).
_CLASS_ORDER = (HardwareKind.CPU, HardwareKind.MPS, HardwareKind.ROCM, HardwareKind.CUDA)


def hardware_class(hardware: Iterable[HardwareKind]) -> HardwareKind:
    """The class a worker's durations are filed under: the most capable kind it
    offers (``cuda`` for a worker with CUDA, else ``rocm``, ``mps``, ``cpu``)."""
    offered = set(hardware)
    best = HardwareKind.CPU
    for kind in _CLASS_ORDER:
        if kind in offered:
            best = kind
    return best
