"""Task slices: a task's requirement sets in the order they are tried, and which is in force.

A task's ``requirements`` is slice 0 and ``fallbacks[i]`` slice ``i + 1``
(LUCI Swarming's task slices): slice ``i + 1`` replaces slice ``i`` once the
task has waited ``fallbacks[i].after_seconds`` since it was submitted. Time
counts from submission, not from the last requeue, so a retried task does
not go back to waiting for the hardware it already gave up on.

Callers: the coordinator's queue (:mod:`testfleet.coordinator.task_queue`)
keys each queued task by the slice in force and re-keys it when that slice
expires; the unschedulable check (:mod:`testfleet.coordinator.unschedulable`)
asks whether any later slice could still run. Pure: times are passed in.
"""

from __future__ import annotations

from testfleet.domain.task import Requirements, TaskSpec


def slice_requirements(spec: TaskSpec) -> list[Requirements]:
    """Every slice's requirements, slice 0 first."""
    return [spec.requirements, *(f.requirements for f in spec.fallbacks)]


def slice_in_force(spec: TaskSpec, submitted_at: float, now: float) -> int:
    """The index of the slice tried at ``now`` for a task submitted at ``submitted_at``."""
    waited = now - submitted_at
    index = 0
    for fallback in spec.fallbacks:
        if waited < fallback.after_seconds:
            break
        index += 1
    return index


def requirements_of_slice(spec: TaskSpec, index: int) -> Requirements:
    return spec.requirements if index == 0 else spec.fallbacks[index - 1].requirements


def slice_expires_at(spec: TaskSpec, submitted_at: float, index: int) -> float | None:
    """When slice ``index`` gives way to the next one (None: it is the last)."""
    if index >= len(spec.fallbacks):
        return None
    return submitted_at + spec.fallbacks[index].after_seconds


def describe_slice(spec: TaskSpec, index: int) -> str:
    """How a user reads which slice a task is on, e.g. ``slice 1 of 3 (after 600 s)``."""
    total = len(spec.fallbacks) + 1
    if index == 0:
        return f"slice 0 of {total} (requirements)"
    after = spec.fallbacks[index - 1].after_seconds
    return f"slice {index} of {total} (fallbacks[{index - 1}], after {after:g} s)"
