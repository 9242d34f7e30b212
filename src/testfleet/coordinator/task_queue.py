"""The queue of tasks waiting for a worker, kept in the shape the scheduler reads.

Callers: only :class:`testfleet.coordinator.state.CoordinatorState` (the one
writer). Queued tasks sit in one insertion-ordered dict per priority level,
oldest first, so the scheduler can merge levels instead of sorting everything;
tasks waiting out a retry delay sit in a heap until their time comes.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping

from testfleet.domain.enums import TaskType
from testfleet.domain.task import Requirements, TaskSpec
from testfleet.scheduling.view import PendingTask


def match_key(spec: TaskSpec) -> str:
    """The key tasks share when they match exactly the same workers."""
    return f"{spec.type.value}|{spec.requirements.key()}"


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

    def push(self, spec: TaskSpec, queued_at: float) -> str:
        """Queue ``spec`` now (at the back of its priority level); returns its
        match key (worked out here once, so callers need not do it again)."""
        key = self._match_key(spec)
        pending = PendingTask(
            task_id=spec.task_id,
            task_type=spec.type,
            priority=spec.priority,
            queued_at=queued_at,
            requirements=spec.requirements,
            match_key=key,
        )
        self._levels.setdefault(spec.priority, {})[spec.task_id] = pending
        self._level_of[spec.task_id] = spec.priority
        count = self._key_counts.get(key, 0)
        if count == 0:
            self._key_requirements[key] = (spec.type, spec.requirements)
            self._keys_changed = True
        self._key_counts[key] = count + 1
        return key

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
        key = pending.match_key
        self._key_counts[key] -= 1
        if self._key_counts[key] == 0:
            del self._key_counts[key]
            del self._key_requirements[key]
            self._keys_changed = True
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
