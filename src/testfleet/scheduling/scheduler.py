"""The scheduler: one pure function from a snapshot to decisions.

Terms:

* **effective priority**: ``priority - (view.now - queued_at) / view.aging_seconds``.
  Lower runs first; every ``aging_seconds`` of waiting counts as one priority
  level, so low-priority work never starves. Ties go to the older task, then
  to the smaller ``task_id``.
* **free slot**: one more task an accepting worker will take now
  (``WorkerView.free_slots``, decremented here as tasks are placed).
* **match key**: the task type plus its canonical requirements; tasks with the
  same key match the same workers, so matching is computed once per key.
* **best fit**: among the accepting workers with a free slot that match a
  task, the least capable one (:func:`~testfleet.scheduling.matching.capability_rank`,
  ties by ``worker_id``), so a CPU test never holds an H200.
* **free resources**: a worker's allocatable totals
  (:func:`~testfleet.scheduling.matching.allocatable`) less what its open
  attempts reserve (``WorkerView.reserved``), decremented here as tasks with
  ``requirements.resources`` are placed. A task goes only where it has both a
  free slot and enough free resources; the resources are part of the match
  key, so every task of a key needs the same amounts.
* **exhausted key**: a key none of whose matching workers has a free slot
  (or, for a key that reserves resources, enough free resources) left. Its
  tasks are skipped with one set lookup; slots and free resources only ever
  decrease within a call, so an exhausted key stays exhausted.
* **unschedulable key**: a key that no connected worker (draining ones
  included) matches at all; its tasks would wait forever, so users are told why.

Callers: the coordinator builds a :class:`SchedulingView` once per turn of its
event loop, calls :func:`schedule`, and applies the decisions (sends the
``assign`` messages, marks the unschedulable tasks). Nothing here reads a
clock, does I/O, awaits or draws random numbers, so the same view always gives
the same decisions, which is what lets the property tests
(``tests/unit/scheduling``) check it against a plain reference implementation
and ``benchmarks/scheduler.py`` time it over a 10,000-task queue.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.resources import NO_RESOURCES, ResourceAmounts
from testfleet.scheduling.matching import (
    allocatable,
    capability_rank,
    matcher,
    unschedulable_reason,
)
from testfleet.scheduling.view import (
    PendingTask,
    Placement,
    SchedulingDecisions,
    SchedulingView,
    WorkerView,
)

#: A placement policy: a pure function from a snapshot to decisions, with
#: :func:`schedule`'s signature. The coordinator state takes one (``schedule``
#: unless told otherwise) so that the fleet simulator
#: (:mod:`testfleet.simulation`) can compare policies on the same trace.
SchedulingPolicy = Callable[[SchedulingView], SchedulingDecisions]


def schedule(view: SchedulingView) -> SchedulingDecisions:
    """Decide which queued tasks go to which workers now, and which can never run.

    Called by the coordinator once per turn of its loop; it applies the
    returned decisions. Tasks are visited in effective-priority order and each
    goes to its best-fit worker. A task that cannot be placed now is skipped
    and later tasks may still be placed (a waiting CUDA task must not block
    CPU work). The walk stops as soon as every free slot is used; it returns
    at once (with only the unschedulable reasons) when there are none.
    """
    decisions = SchedulingDecisions(unschedulable=_unschedulable(view))

    # Rank once per call (or take the coordinator's standing ranking); each
    # key searches this order for its best fit.
    candidates = (
        list(view.ranked_workers)
        if view.ranked_workers is not None
        else sorted(
            (w for w in view.workers if w.accepting and w.free_slots > 0),
            key=lambda w: (capability_rank(w.capabilities), w.worker_id),
        )
    )
    remaining = [w.free_slots for w in candidates]
    # Free resources per candidate, worked out only when a key first reserves
    # some: a queue without resource reservations pays nothing for them.
    free: dict[int, ResourceAmounts] = {}
    slots_left = sum(remaining)
    if slots_left == 0:
        return decisions

    keys: dict[str, _KeyState] = {}
    # Shared with the merge, which passes over tasks with these keys without
    # heap work: they cannot be placed any more in this call.
    exhausted: set[str] = set()
    placed: set[str] = set()

    for task in _in_priority_order(view, exhausted):
        key = task.match_key
        if key in exhausted or task.task_id in placed:
            continue
        state = keys.get(key)
        if state is None:
            if key in decisions.unschedulable:
                # No worker matches at all: no need to test the candidates again.
                exhausted.add(key)
                continue
            state = keys[key] = _KeyState.for_task(task, candidates)
        index = state.next_free(remaining, free)
        if index is None:
            exhausted.add(key)
            continue
        decisions.placements.append(Placement(task.task_id, candidates[index].worker_id))
        placed.add(task.task_id)
        remaining[index] -= 1
        if state.reserves:
            free[index] -= state.needs  # next_free filled it
        slots_left -= 1
        if slots_left == 0:
            break
    return decisions


@dataclass(slots=True)
class _KeyState:
    """Best-fit search for one match key over the ranked candidates.

    Workers are tested lazily, in rank order, and each at most once per key:
    everything before ``position`` either does not match or has no free slot
    left, and slots never come back within a call, so the search only moves
    forward and its cost is amortised over all tasks with this key.
    """

    matches: Callable[[WorkerCapabilities], bool]
    candidates: list[WorkerView]
    #: Worker ids the key's requirements exclude (checked beside ``matches``).
    excluded: frozenset[str] = frozenset()
    position: int = 0
    #: The candidate at ``position`` is already known to match.
    confirmed: int = -1
    #: What each task of the key reserves (the same for all: it is in the key).
    needs: ResourceAmounts = NO_RESOURCES
    #: ``bool(needs)``, kept as a plain bool: it is read per candidate tested.
    reserves: bool = False
    #: Whether ``matches`` held, by ``id`` of the capabilities object tested:
    #: workers that share one object (the simulator's fleet of equal machines;
    #: in the coordinator each hello brings its own) are then tested once.
    #: The ids stay valid for the call: the candidates hold the objects.
    verdicts: dict[int, bool] = field(default_factory=dict)

    @classmethod
    def for_task(cls, task: PendingTask, candidates: list[WorkerView]) -> _KeyState:
        return cls(
            matches=matcher(task.task_type, task.requirements),
            candidates=candidates,
            excluded=frozenset(task.requirements.exclude_workers),
            needs=task.requirements.resources.amounts(),
            reserves=task.requirements.resources.declared,
        )

    def next_free(self, remaining: list[int], free: dict[int, ResourceAmounts]) -> int | None:
        """The least capable matching candidate with a free slot and enough free
        resources, or None if none is left. Fills ``free`` for the candidates it
        weighs when the key reserves resources."""
        candidates = self.candidates
        verdicts = self.verdicts
        while self.position < len(candidates):
            index = self.position
            if remaining[index] > 0:
                matched = index == self.confirmed
                if not matched:
                    candidate = candidates[index]
                    if candidate.worker_id not in self.excluded:
                        caps = candidate.capabilities
                        verdict = verdicts.get(id(caps))
                        if verdict is None:
                            verdict = verdicts[id(caps)] = self.matches(caps)
                        matched = verdict
                if matched and (not self.reserves or self._fits(index, free)):
                    self.confirmed = index
                    return index
            self.position += 1
        return None

    def _fits(self, index: int, free: dict[int, ResourceAmounts]) -> bool:
        left = free.get(index)
        if left is None:
            worker = self.candidates[index]
            left = free[index] = allocatable(worker.capabilities) - worker.reserved
        return self.needs.fits_in(left)


def _in_priority_order(view: SchedulingView, skip_keys: set[str]) -> Iterator[PendingTask]:
    """Yield queued tasks by effective priority, then age, then task_id.

    Each level of ``pending_by_priority`` is oldest first, and within one
    level effective priority only rises along it; so a heap holding each
    level's head is a k-way merge: O(log levels) per task taken, and nothing
    is done for the tasks after the point where :func:`schedule` stops.

    Tasks whose key is in ``skip_keys`` (which the caller fills as it goes)
    are passed over inside their level without touching the heap: they would
    be skipped wherever they came in the order, so their order does not
    matter. A task already at a level's head when its key joins the set is
    still yielded; the caller skips it.
    """
    now = view.now
    aging = view.aging_seconds
    # A non-positive aging period would divide by zero; take it as "no aging".
    ages = aging > 0

    def entry(
        task: PendingTask, level: int, rest: Iterator[PendingTask]
    ) -> tuple[float, float, str, int, PendingTask, Iterator[PendingTask]]:
        effective = task.priority - (now - task.queued_at) / aging if ages else task.priority
        # ``level`` is unique per heap entry, so comparison never reaches the task.
        return (effective, task.queued_at, task.task_id, level, task, rest)

    def next_wanted(rest: Iterator[PendingTask]) -> PendingTask | None:
        for task in rest:
            if task.match_key not in skip_keys:
                return task
        return None

    heap = []
    for level, tasks in view.pending_by_priority.items():
        rest = iter(tasks)
        head = next_wanted(rest)
        if head is not None:
            heap.append(entry(head, level, rest))
    heapq.heapify(heap)
    while heap:
        _, _, _, level, task, rest = heap[0]
        yield task
        following = next_wanted(rest)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, entry(following, level, rest))


def _unschedulable(view: SchedulingView) -> dict[str, str]:
    """Why each key in the queue can never run on the connected workers (if it cannot)."""
    reasons: dict[str, str] = {}
    for key in sorted(view.pending_keys):
        task_type, requirements = view.pending_keys[key]
        reason = unschedulable_reason(task_type, requirements, view.workers)
        if reason is not None:
            reasons[key] = reason
    return reasons
