"""The queue of tasks waiting for a worker, kept in the shape the scheduler reads.

Callers: only :class:`testfleet.coordinator.state.CoordinatorState` (the one
writer). Queued tasks sit in one insertion-ordered dict per priority level,
oldest first, so the scheduler can merge levels instead of sorting everything;
tasks waiting out a retry delay sit in a heap until their time comes.

A task with fallbacks (:mod:`testfleet.domain.task_slices`) is queued under
the slice in force, and :meth:`TaskQueue.advance_slices` re-keys it in place
(keeping its age and its place in its level) when that slice expires, so the
pure scheduler only ever sees one requirement set per task.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Mapping

from testfleet.domain.enums import TaskType
from testfleet.domain.task import Requirements, TaskSpec
from testfleet.domain.task_slices import (
    requirements_of_slice,
    slice_expires_at,
    slice_in_force,
    slice_requirements,
)
from testfleet.domain.work_keys import spec_work_key
from testfleet.scheduling.view import PendingTask


def match_key(spec: TaskSpec, slice_index: int = 0) -> str:
    """The key tasks share when they match exactly the same workers now and may
    fall back to the same ones later (the later slices are part of the key: the
    unschedulable check asks whether any of them could run)."""
    if not spec.fallbacks:
        return f"{spec.type.value}|{spec.requirements.key()}"
    key = f"{spec.type.value}|{requirements_of_slice(spec, slice_index).key()}"
    later = slice_requirements(spec)[slice_index + 1 :]
    if later:
        key += "|then:" + "|".join(r.key() for r in later)
    return key


#: How many requirement objects :class:`TaskQueue` remembers the key of.
_KEY_MEMO_SIZE = 1024


class TaskQueue:
    """Queued tasks by priority, delayed retries, and the match keys present."""

    def __init__(self) -> None:
        self._levels: dict[int, dict[str, PendingTask]] = {}
        self._level_of: dict[str, int] = {}
        self._delayed: list[tuple[float, str]] = []
        self._delayed_ids: dict[str, float] = {}
        self._key_counts: dict[str, int] = {}
        self._key_requirements: dict[str, tuple[TaskType, Requirements]] = {}
        self._keys_changed = False
        #: Slices in force of queued tasks with fallbacks, and when each expires.
        self._slice_of: dict[str, int] = {}
        self._submitted_at: dict[str, float] = {}
        self._expiries: list[tuple[float, str, int]] = []
        #: match key -> the later slices' requirements (keys of tasks with fallbacks only).
        self._key_later: dict[str, list[Requirements]] = {}
        # Match keys by the identity of the spec's requirements object, with
        # the object (so its id cannot be reused while remembered): tasks that
        # share one object (copies of one spec, a retry, the simulator's
        # trace) share the key without dumping the requirements to JSON again.
        # Bounded: oldest first out.
        self._key_memo: dict[int, tuple[Requirements, TaskType, str]] = {}

    def _match_key(self, spec: TaskSpec) -> str:
        requirements = spec.requirements
        known = self._key_memo.get(id(requirements))
        if known is not None and known[0] is requirements and known[1] is spec.type:
            return known[2]
        key = match_key(spec)
        if len(self._key_memo) >= _KEY_MEMO_SIZE:
            del self._key_memo[next(iter(self._key_memo))]
        self._key_memo[id(requirements)] = (requirements, spec.type, key)
        return key

    def __len__(self) -> int:
        return len(self._level_of)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._level_of

    @property
    def delayed_count(self) -> int:
        return len(self._delayed_ids)

    def push(
        self,
        spec: TaskSpec,
        queued_at: float,
        submitted_at: float | None = None,
        now: float | None = None,
        work_key: str | None = None,
    ) -> str:
        """Queue ``spec`` (at the back of its priority level) under the slice in force
        at ``now`` (default ``queued_at``) for a task submitted at ``submitted_at``
        (default ``queued_at``: a new task). ``work_key``: the spec's
        :func:`~testfleet.domain.work_keys.spec_work_key`, if the caller keeps it
        (``TaskRecord.work_key``); worked out here if not. Returns its match key."""
        submitted = queued_at if submitted_at is None else submitted_at
        at = queued_at if now is None else now
        index = slice_in_force(spec, submitted, at) if spec.fallbacks else 0
        key = spec_work_key(spec) if work_key is None else work_key
        pending = self._pending(spec, queued_at, index, key)
        self._levels.setdefault(spec.priority, {})[spec.task_id] = pending
        self._level_of[spec.task_id] = spec.priority
        self._count_key(pending)
        if spec.fallbacks:
            self._slice_of[spec.task_id] = index
            self._submitted_at[spec.task_id] = submitted
            expires = slice_expires_at(spec, submitted, index)
            if expires is not None:
                heapq.heappush(self._expiries, (expires, spec.task_id, index))
        return pending.match_key

    def _pending(self, spec: TaskSpec, queued_at: float, index: int, work_key: str) -> PendingTask:
        key = match_key(spec, index) if spec.fallbacks else self._match_key(spec)
        if spec.fallbacks and key not in self._key_later:
            self._key_later[key] = slice_requirements(spec)[index + 1 :]
        return PendingTask(
            task_id=spec.task_id,
            task_type=spec.type,
            priority=spec.priority,
            queued_at=queued_at,
            requirements=requirements_of_slice(spec, index),
            match_key=key,
            work_key=work_key,
        )

    def _count_key(self, pending: PendingTask) -> None:
        key = pending.match_key
        count = self._key_counts.get(key, 0)
        if count == 0:
            self._key_requirements[key] = (pending.task_type, pending.requirements)
            self._keys_changed = True
        self._key_counts[key] = count + 1

    def _uncount_key(self, key: str) -> None:
        self._key_counts[key] -= 1
        if self._key_counts[key] == 0:
            del self._key_counts[key]
            del self._key_requirements[key]
            self._key_later.pop(key, None)
            self._keys_changed = True

    def slice_of(self, task_id: str) -> int:
        """The slice a queued task is waiting under (0 for tasks without fallbacks)."""
        return self._slice_of.get(task_id, 0)

    def later_slices(self, key: str) -> list[Requirements]:
        """The slices tasks of ``key`` fall back to, in order (empty: none)."""
        return self._key_later.get(key, [])

    def next_slice_expiry(self) -> float | None:
        """When the next queued task's slice expires (None: none will), so that a
        driver that jumps time (the fleet simulator) can wake the state then."""
        while self._expiries:
            _, task_id, index = self._expiries[0]
            if self._slice_of.get(task_id) == index and task_id in self._level_of:
                return self._expiries[0][0]
            heapq.heappop(self._expiries)  # stale: left the queue or requeued since
        return None

    def advance_slices(
        self, spec_of: Callable[[str], TaskSpec], now: float
    ) -> list[tuple[str, int]]:
        """Move each queued task whose slice expired by ``now`` onto the slice in force,
        in place (same age, same place in its level); returns ``(task_id, slice)`` for
        each task moved. Called by the coordinator on every tick; ``spec_of`` gives an
        open task's spec by its id."""
        moved: list[tuple[str, int]] = []
        while self._expiries and self._expiries[0][0] <= now:
            _, task_id, index = heapq.heappop(self._expiries)
            # Skip entries of tasks that left the queue, or were requeued since.
            if self._slice_of.get(task_id) != index or task_id not in self._level_of:
                continue
            spec = spec_of(task_id)
            submitted = self._submitted_at[task_id]
            new_index = slice_in_force(spec, submitted, now)
            tasks = self._levels[self._level_of[task_id]]
            old = tasks[task_id]
            self._uncount_key(old.match_key)
            pending = self._pending(spec, old.queued_at, new_index, old.work_key)
            tasks[task_id] = pending  # assignment keeps the dict's order
            self._count_key(pending)
            self._slice_of[task_id] = new_index
            expires = slice_expires_at(spec, submitted, new_index)
            if expires is not None:
                heapq.heappush(self._expiries, (expires, task_id, new_index))
            moved.append((task_id, new_index))
        return moved

    def push_delayed(self, task_id: str, not_before: float) -> None:
        """Hold ``task_id`` until ``not_before`` (a retry delay); see :meth:`pop_due`."""
        self._delayed_ids[task_id] = not_before
        heapq.heappush(self._delayed, (not_before, task_id))

    def pop_due(self, now: float) -> list[str]:
        """Task ids whose retry delay has passed, in the order they became due."""
        due: list[str] = []
        while self._delayed and self._delayed[0][0] <= now:
            not_before, task_id = heapq.heappop(self._delayed)
            # Skip heap entries of tasks removed (cancelled) while they waited.
            if self._delayed_ids.get(task_id) == not_before:
                del self._delayed_ids[task_id]
                due.append(task_id)
        return due

    def remove(self, task_id: str) -> bool:
        """Take ``task_id`` out of the queue or the delayed set; False if it was in neither."""
        if self._delayed_ids.pop(task_id, None) is not None:
            return True
        level = self._level_of.pop(task_id, None)
        if level is None:
            return False
        tasks = self._levels[level]
        pending = tasks.pop(task_id)
        if not tasks:
            del self._levels[level]
        self._slice_of.pop(task_id, None)
        self._submitted_at.pop(task_id, None)
        self._uncount_key(pending.match_key)
        return True

    def pending_by_priority(self) -> Mapping[int, Collection[PendingTask]]:
        """Live views of each level (oldest first); valid until the queue next changes."""
        return {level: tasks.values() for level, tasks in self._levels.items()}

    def key_requirements(self) -> Mapping[str, tuple[TaskType, Requirements]]:
        return self._key_requirements

    def task_ids_with_key(self, key: str) -> list[str]:
        return [
            task_id
            for tasks in self._levels.values()
            for task_id, pending in tasks.items()
            if pending.match_key == key
        ]

    def take_keys_changed(self) -> bool:
        """True once after the set of match keys in the queue changed."""
        changed, self._keys_changed = self._keys_changed, False
        return changed
