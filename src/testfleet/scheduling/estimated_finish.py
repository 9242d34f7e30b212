"""Placement by estimated finish: among the workers that fit, the one expected to finish first.

A :data:`~testfleet.scheduling.scheduler.SchedulingPolicy` beside today's best
fit (:func:`~testfleet.scheduling.scheduler.schedule`). Callers: the
coordinator state when ``CoordinatorSettings.scheduling_policy`` names it
(:mod:`testfleet.scheduling.policies`), and the fleet simulator, which replays
one trace under both (``benchmarks/simulate.py --compare``). Pure: no I/O, no
clock, no randomness; the same view gives the same decisions.

Terms (beside the scheduler's):

* **tier**: workers with the same GPU offer (has a GPU, largest GPU memory,
  best CUDA compute capability: the first three parts of
  :func:`~testfleet.scheduling.matching.capability_rank`). Tiers are ordered
  least capable first, as best fit orders workers.
* **estimate** of a task on a worker: the typical seconds of the task's work
  key on the worker's hardware class (``view.typical_seconds``, from history)
  divided by the worker's speed factor (``view.speed_factors``). A worker with
  a free slot starts now, so what it already runs does not delay the task
  (workers hold no queue of their own).

The rules, in passes over the queue in effective-priority order:

1. **Within the least capable tier that fits, the fastest worker.** Each task
   goes to the first matching worker with a free slot (and free resources) in
   the order (tier, speed factor descending, capability rank, worker id). With
   every factor 1.0 this is exactly best fit's order, so without history the
   decisions are today's (a property test checks it against ``schedule``).
2. **Up a tier only when it pays and nothing needs it.** After pass 1, a task
   moves to a more capable tier's free worker when its estimate there is at
   most ``climb_ratio`` of its estimate where pass 1 put it (a job a GPU runs
   8 times faster, say), and the tier keeps at least ``reserve_slots`` free
   slots afterwards. Pass 1 already gave every free slot to any waiting task
   that fits it, so a slot still free after it is wanted by nothing queued now:
   a CPU test never takes a GPU that GPU work waits for, and the reserve keeps
   some for GPU work that arrives next (with a one-slot H200, never taken).
   Slots the moves free are then offered to the tasks still waiting (pass 1
   again, without moves). Work typically ``explore_seconds`` or longer that
   has never run on the more capable class moves there on the same terms,
   once there is no better-known move: best fit's habit of keeping it on the
   least capable tier would otherwise mean its time there is never learnt.
3. **The longest work to the fastest workers.** Among the tasks of one match
   key placed on one tier in this call, the longest (typical seconds on the
   tier's class) get the fastest of the workers they were given (a long job
   on a slow machine is what a run's tail is made of).

Both need history: without a typical duration on both classes a task never
moves, and without speed factors the order is best fit's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from testfleet.domain.enums import HardwareKind
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.resources import ResourceAmounts
from testfleet.domain.work_keys import hardware_class
from testfleet.scheduling.matching import allocatable, capability_rank, matcher
from testfleet.scheduling.scheduler import SchedulingPolicy, _in_priority_order, _unschedulable
from testfleet.scheduling.scheduler import schedule as best_fit
from testfleet.scheduling.view import (
    PendingTask,
    Placement,
    SchedulingDecisions,
    SchedulingView,
    WorkerView,
)

#: Move up a tier only for an estimate at most this share of the one below.
DEFAULT_CLIMB_RATIO = 0.5
#: Free slots a more capable tier keeps for work that needs it.
DEFAULT_RESERVE_SLOTS = 1
#: Work typically this long where it runs is tried once on a more capable class
#: it has never run on (otherwise best fit's habit of keeping it on the least
#: capable tier would mean its time there is never learnt).
DEFAULT_EXPLORE_SECONDS = 60.0

_Tier = tuple[bool, float, float]


def estimated_finish_policy(
    climb_ratio: float = DEFAULT_CLIMB_RATIO,
    reserve_slots: int = DEFAULT_RESERVE_SLOTS,
    explore_seconds: float = DEFAULT_EXPLORE_SECONDS,
) -> SchedulingPolicy:
    """A policy with these knobs (see the module docstring); raises ValueError on bad ones."""
    if not 0 < climb_ratio <= 1:
        raise ValueError(f"climb_ratio must be in (0, 1], got {climb_ratio}")
    if reserve_slots < 0:
        raise ValueError(f"reserve_slots must be 0 or more, got {reserve_slots}")
    if not explore_seconds > 0:
        raise ValueError(f"explore_seconds must be greater than 0, got {explore_seconds}")

    def policy(view: SchedulingView) -> SchedulingDecisions:
        if not view.speed_factors and not view.typical_seconds:
            return best_fit(view)  # no history: exactly today's decisions, at its speed
        return _Placer(view, climb_ratio, reserve_slots, explore_seconds).run()

    policy.__name__ = "estimated-finish"
    return policy


def estimated_finish(view: SchedulingView) -> SchedulingDecisions:
    """Place by estimated finish with the default knobs (see the module docstring)."""
    return _DEFAULT(view)


_DEFAULT = estimated_finish_policy()


@dataclass(slots=True)
class _Key:
    """What every task of one match key needs, and where its pass-1 search stands."""

    matches: Callable[[WorkerCapabilities], bool]
    excluded: frozenset[str]
    needs: ResourceAmounts
    reserves: bool
    position: int = 0
    #: The candidate at ``position`` is known to match (a worker with several
    #: free slots is matched once, not once per slot).
    confirmed: int = -1


class _Placer:
    def __init__(
        self, view: SchedulingView, climb_ratio: float, reserve_slots: int, explore_seconds: float
    ) -> None:
        self.view = view
        self.climb_ratio = climb_ratio
        self.reserve_slots = reserve_slots
        self.explore_seconds = explore_seconds
        speeds = view.speed_factors
        ranked = [
            (capability_rank(w.capabilities), w)
            for w in view.workers
            if w.accepting and w.free_slots > 0
        ]
        ranked.sort(
            key=lambda rw: (rw[0][:3], -speeds.get(rw[1].worker_id, 1.0), rw[0], rw[1].worker_id)
        )
        self.candidates: list[WorkerView] = [w for _, w in ranked]
        self.tier: list[_Tier] = [rank[:3] for rank, _ in ranked]
        self.speed = [speeds.get(w.worker_id, 1.0) for w in self.candidates]
        self.hardware: list[HardwareKind] = [
            hardware_class(w.capabilities.hardware) for w in self.candidates
        ]
        self.remaining = [w.free_slots for w in self.candidates]
        self.free: dict[int, ResourceAmounts] = {}
        #: Index of each tier's first candidate, in tier order.
        self.tier_starts = [
            i for i in range(len(ranked)) if i == 0 or self.tier[i] != self.tier[i - 1]
        ]
        self.tier_ends = {
            start: (self.tier_starts[n + 1] if n + 1 < len(self.tier_starts) else len(ranked))
            for n, start in enumerate(self.tier_starts)
        }
        self.tier_free = {
            self.tier[start]: sum(self.remaining[start : self.tier_ends[start]])
            for start in self.tier_starts
        }
        self.keys: dict[str, _Key] = {}
        #: Pass 2's search per (match key, tier start): free slots of a tier a
        #: task may climb to only shrink, so it only moves forward (a slot given
        #: back in a tier it passed is left to the next turn).
        self.climb_positions: dict[tuple[str, int], int] = {}

    def run(self) -> SchedulingDecisions:
        view = self.view
        decisions = SchedulingDecisions(unschedulable=_unschedulable(view))
        if not self.candidates:
            return decisions
        placed: dict[str, int] = {}
        order: list[PendingTask] = []
        self._fill(decisions.unschedulable, placed, order)
        if view.typical_seconds and self._climb(placed, order):
            self.keys.clear()  # slots came back: searches start again
            self._fill(decisions.unschedulable, placed, order)
        if view.typical_seconds and view.speed_factors:
            self._longest_to_fastest(placed, order)
        decisions.placements.extend(
            Placement(task.task_id, self.candidates[placed[task.task_id]].worker_id)
            for task in order
        )
        return decisions

    # ------------------------------------------------------------------ pass 1

    def _fill(
        self, unschedulable: dict[str, str], placed: dict[str, int], order: list[PendingTask]
    ) -> None:
        slots_left = sum(self.remaining)
        if slots_left == 0:
            return
        exhausted: set[str] = set()
        for task in _in_priority_order(self.view, exhausted):
            key = task.match_key
            if key in exhausted or task.task_id in placed:
                continue
            if key in unschedulable:
                exhausted.add(key)
                continue
            state = self._key(task)
            index = self._next_free(state)
            if index is None:
                exhausted.add(key)
                continue
            self._take(index, state)
            placed[task.task_id] = index
            order.append(task)
            slots_left -= 1
            if slots_left == 0:
                break

    def _key(self, task: PendingTask) -> _Key:
        state = self.keys.get(task.match_key)
        if state is None:
            requirements = task.requirements
            state = self.keys[task.match_key] = _Key(
                matches=matcher(task.task_type, requirements),
                excluded=frozenset(requirements.exclude_workers),
                needs=requirements.resources.amounts(),
                reserves=requirements.resources.declared,
            )
        return state

    def _fits(self, index: int, state: _Key) -> bool:
        worker = self.candidates[index]
        if worker.worker_id in state.excluded or not state.matches(worker.capabilities):
            return False
        return not state.reserves or state.needs.fits_in(self._free(index))

    def _room(self, index: int, state: _Key) -> bool:
        return not state.reserves or state.needs.fits_in(self._free(index))

    def _free(self, index: int) -> ResourceAmounts:
        left = self.free.get(index)
        if left is None:
            worker = self.candidates[index]
            left = self.free[index] = allocatable(worker.capabilities) - worker.reserved
        return left

    def _next_free(self, state: _Key) -> int | None:
        """The first candidate at or after the key's position that takes it now.
        Slots and resources only shrink within a pass, so the position only
        moves forward (the same amortisation as best fit's search)."""
        while state.position < len(self.candidates):
            index = state.position
            if self.remaining[index] > 0:
                if index == state.confirmed:
                    if self._room(index, state):
                        return index
                elif self._fits(index, state):
                    state.confirmed = index
                    return index
            state.position += 1
        return None

    def _take(self, index: int, state: _Key) -> None:
        self.remaining[index] -= 1
        self.tier_free[self.tier[index]] -= 1
        if state.reserves:
            self.free[index] = self._free(index) - state.needs

    def _give_back(self, index: int, state: _Key) -> None:
        self.remaining[index] += 1
        self.tier_free[self.tier[index]] += 1
        if state.reserves:
            self.free[index] = self._free(index) + state.needs

    # ------------------------------------------------------------------ pass 2

    def _climb(self, placed: dict[str, int], order: list[PendingTask]) -> bool:
        """Move placed tasks up a tier where that pays (module docstring, rule 2)."""
        moved = False
        typical = self.view.typical_seconds
        for task in order:
            durations = typical.get(task.work_key) if task.work_key else None
            if not durations:
                continue
            index = placed[task.task_id]
            here = durations.get(self.hardware[index])
            if here is None:
                continue
            best_estimate = self.climb_ratio * here / self.speed[index]
            best: int | None = None
            explore: int | None = None
            state = self._key(task)
            for start in self.tier_starts:
                tier = self.tier[start]
                if tier <= self.tier[index] or self.tier_free[tier] <= self.reserve_slots:
                    continue
                candidate = self._first_free(task.match_key, state, start)
                if candidate is None:
                    continue
                seconds = durations.get(self.hardware[candidate])
                if seconds is None:
                    # Never run on this class: worth one try only for long work
                    # (a long job may be one a GPU speeds up; learning it costs
                    # a spare slot for a while, and the reserve stays free).
                    if explore is None and here >= self.explore_seconds:
                        explore = candidate
                elif seconds / self.speed[candidate] <= best_estimate:
                    best_estimate = seconds / self.speed[candidate]
                    best = candidate
            if best is None:
                best = explore
            if best is not None:
                self._give_back(index, state)
                self._take(best, state)
                placed[task.task_id] = best
                moved = True
        return moved

    # ------------------------------------------------------------------ pass 3

    def _longest_to_fastest(self, placed: dict[str, int], order: list[PendingTask]) -> None:
        """Among the tasks of one match key placed on one tier this turn, give the
        longest (by typical seconds) the fastest workers (module docstring, rule 3).
        Tasks of one key match the same workers and reserve the same amounts, so
        any exchange among them is as valid as pass 1's placements."""
        groups: dict[tuple[str, _Tier], list[PendingTask]] = {}
        for task in order:
            groups.setdefault((task.match_key, self.tier[placed[task.task_id]]), []).append(task)
        typical = self.view.typical_seconds
        for tasks in groups.values():
            slots = sorted((placed[t.task_id] for t in tasks), key=lambda i: (-self.speed[i], i))
            if len(tasks) < 2 or self.speed[slots[0]] == self.speed[slots[-1]]:
                continue
            hardware = self.hardware[slots[0]]
            lengths = {t.task_id: typical.get(t.work_key, {}).get(hardware, 0.0) for t in tasks}
            # Stable: tasks of unknown or equal length keep their order.
            longest_first = sorted(tasks, key=lambda t: lengths[t.task_id], reverse=True)
            for task, index in zip(longest_first, slots, strict=True):
                placed[task.task_id] = index

    def _first_free(self, key: str, state: _Key, start: int) -> int | None:
        """The tier's first (fastest) candidate from ``start`` that takes the key now."""
        end = self.tier_ends[start]
        position = self.climb_positions.get((key, start), start)
        while position < end:
            if self.remaining[position] > 0 and self._fits(position, state):
                break
            position += 1
        self.climb_positions[(key, start)] = position
        return position if position < end else None
