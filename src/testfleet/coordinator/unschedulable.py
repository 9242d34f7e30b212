"""Why queued tasks cannot run, per requirement key, and how that changes over time.

Callers: :class:`~testfleet.coordinator.state.CoordinatorState` calls
:meth:`UnschedulableReasons.update` with the pure scheduler's reasons whenever
the workers or the queue's requirement keys changed, marks the queued tasks of
each changed key, and reads :meth:`UnschedulableReasons.get` for a task
entering the queue.

One rule lives here: when the last worker leaves (a demo shutting down, a rack
rebooting), every queued task becomes unschedulable for want of workers, and
"no workers are connected" would replace the reason that was true while they
were there (e.g. "hardware: needs one of [cuda]; connected workers offer
[cpu]"). That reason still tells the user what to fix, so it is kept, saying
that no workers are left.

And one for tasks with fallbacks (:mod:`testfleet.domain.task_slices`): the
scheduler judges the slice in force only, but a task is unschedulable only
when no slice, current or later, could run on the connected workers
(:func:`with_fallbacks`). One whose later slice could run is waiting, and the
task view says which slice it waits under.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from testfleet.domain.enums import TaskType
from testfleet.domain.task import Requirements
from testfleet.scheduling.matching import NO_WORKERS_CONNECTED, unschedulable_reason
from testfleet.scheduling.view import WorkerView


def with_fallbacks(
    reasons: dict[str, str],
    later_slices: Callable[[str], list[Requirements]],
    key_requirements: Mapping[str, tuple[TaskType, Requirements]],
    workers: Collection[WorkerView],
) -> dict[str, str]:
    """The scheduler's ``reasons`` less the keys some later slice of which a connected
    worker could run; the rest name every slice's reason. Called by the coordinator
    state after each scheduling round that judged the queue's keys."""
    kept: dict[str, str] = {}
    for key, reason in reasons.items():
        later = later_slices(key)
        if not later or reason == NO_WORKERS_CONNECTED or key not in key_requirements:
            kept[key] = reason
            continue
        task_type = key_requirements[key][0]
        later_reasons = [unschedulable_reason(task_type, r, workers) for r in later]
        if any(r is None for r in later_reasons):
            continue  # waiting for its fallback, not stuck
        parts = [f"the slice in force: {reason}"] + [
            f"later slice {i + 1}: {r}" for i, r in enumerate(later_reasons)
        ]
        kept[key] = "no requirement slice can run here: " + "; ".join(parts)
    return kept


class UnschedulableReasons:
    """The current reason for each unschedulable requirement key."""

    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}
        #: The last reason each key had while workers were connected.
        self._fleet_reasons: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        """Why tasks with requirement ``key`` cannot run now (None: they can)."""
        return self._reasons.get(key)

    def update(self, reasons: dict[str, str]) -> set[str]:
        """Take the scheduler's ``reasons`` (every unschedulable key); returns the keys
        whose reason changed, appeared or went away."""
        reasons = self._with_last_fleet_reasons(reasons)
        changed = {
            key
            for key in set(reasons) | set(self._reasons)
            if reasons.get(key) != self._reasons.get(key)
        }
        self._reasons = reasons
        return changed

    def _with_last_fleet_reasons(self, reasons: dict[str, str]) -> dict[str, str]:
        kept: dict[str, str] = {}
        for key, reason in reasons.items():
            if reason != NO_WORKERS_CONNECTED:
                self._fleet_reasons[key] = reason
            elif key in self._fleet_reasons:
                reason = (
                    f"{self._fleet_reasons[key]} (while workers were connected); "
                    f"{NO_WORKERS_CONNECTED} now"
                )
            kept[key] = reason
        # A key that became schedulable, or left the queue, starts afresh.
        for key in set(self._fleet_reasons) - set(reasons):
            del self._fleet_reasons[key]
        return kept
