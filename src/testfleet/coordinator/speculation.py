"""Stragglers: when an attempt runs far past its estimate, a speculative copy elsewhere.

Near the end of a run or a batch, one slow worker (thermal throttling, a noisy
neighbour) holds the whole run back while other workers sit idle. A copy of
its attempt on an idle worker often finishes first. The rules (issue 14):

- An attempt is a **straggler** once it has run (since its worker accepted
  it) longer than ``max(estimate * factor, estimate + minimum)`` seconds
  (:func:`straggling_after`; the settings ``speculation_factor`` and
  ``speculation_min_seconds``). The minimum keeps short tasks from being
  copied for a few seconds' jitter.
- The **estimate** (:func:`estimate_seconds`, one small function so that a
  fuller estimator can replace it): the task's ``expected_seconds`` if the
  client gave one, else the median of the last completed run times of the
  same work (:class:`DurationHistory`, keyed by :func:`work_key`: the type and
  the config), else none, and a task without an estimate is never copied.
- A copy is made only for an idempotent task (``domain.task.is_idempotent``:
  tests and benchmarks by default, commands only if they say so), at most
  one per task, never of a copy, and only on an accepting worker with a free
  slot that matches the slice the attempt runs under, is not the straggler's
  worker, and that no queued task could use (:func:`pick_worker`): queued
  work always comes first, so copies happen only at the end of a run.
- The first result of either attempt counts; the other attempt is cancelled
  with the ``cancel`` message the coordinator sends for cancelled tasks, and
  any result it still sends is kept as ``late``. Both stay in
  ``task_execution_history`` (the copy's row has ``speculative = true``).
  These moves are :class:`~testfleet.coordinator.task_lifecycle.TaskLifecycle`'s;
  this module decides when and where.

Callers: the task lifecycle (the coordinator state's one writer) calls
:meth:`Speculation.watch` when an attempt starts running,
:meth:`Speculation.record_duration` on each counted completion,
:meth:`Speculation.due` on each tick, and reads the counters for the
``testfleet_speculative_copies_total`` metric. Nothing here reads a clock.
"""

from __future__ import annotations

import heapq
import statistics
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.domain.enums import TaskType
from testfleet.domain.records import AttemptRecord, TaskRecord
from testfleet.domain.task import Requirements, TaskSpec, is_idempotent
from testfleet.domain.work_keys import duration_key
from testfleet.scheduling.matching import allocatable, capability_rank, matcher
from testfleet.scheduling.view import WorkerView

#: Completed run times kept per work key, and work keys kept (least recently
#: completed dropped first): a median of 20 is stable, and 10,000 keys of 20
#: floats is a few MB at most.
DURATIONS_PER_WORK = 20
WORK_KEYS_KEPT = 10_000
#: How often overdue attempts are matched against idle workers (building the
#: workers' view is O(workers); stragglers are minutes late, a second is nothing).
CHECK_INTERVAL_SECONDS = 1.0


class SpeculationEvent(StrEnum):
    """What the ``testfleet_speculative_copies_total`` counter counts."""

    #: A copy of a straggling attempt was assigned.
    STARTED = "started"
    #: The copy's result came first and counted.
    WON = "won"
    #: One attempt of a pair was cancelled because the other finished first.
    CANCELLED = "cancelled"


#: What counts as "the same work" for past durations: the type and the config
#: (kept on each task record as ``TaskRecord.duration_key``, worked out once).
work_key = duration_key


class DurationHistory:
    """Recent completed run times per work key, in memory (rebuilt as results arrive
    after a restart: a cold start simply has no estimate, and copies nothing)."""

    def __init__(self) -> None:
        self._runs: OrderedDict[str, deque[float]] = OrderedDict()

    def add(self, key: str, seconds: float) -> None:
        runs = self._runs.get(key)
        if runs is None:
            runs = self._runs[key] = deque(maxlen=DURATIONS_PER_WORK)
            if len(self._runs) > WORK_KEYS_KEPT:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(key)
        runs.append(seconds)

    def median(self, key: str) -> float | None:
        runs = self._runs.get(key)
        return statistics.median(runs) if runs else None


def estimate_seconds(
    spec: TaskSpec, history: DurationHistory, key: str | None = None
) -> float | None:
    """How long ``spec`` should run: the client's hint, else the median of past runs of
    the same work, else None (unknown). The one place an estimate comes from, so a
    fuller estimator (per-worker speed, per-hardware history) can take its place.
    ``key``: the spec's :func:`work_key`, if the caller has it already."""
    if spec.expected_seconds is not None:
        return spec.expected_seconds
    return history.median(work_key(spec) if key is None else key)


def straggling_after(estimate: float, factor: float, minimum: float) -> float:
    """Seconds of running after which an attempt with ``estimate`` is a straggler."""
    return max(estimate * factor, estimate + minimum)


def pick_worker(
    task_type: TaskType,
    requirements: Requirements,
    running_on: str,
    workers: Iterable[WorkerView],
    queued: Mapping[str, tuple[TaskType, Requirements]],
    taken: Mapping[str, int],
) -> WorkerView | None:
    """The idle worker a copy goes to, or None: the least capable accepting worker with
    a free slot (less ``taken``: copies placed this check) that matches ``requirements``,
    fits its resources, is not ``running_on`` or excluded, and that no queued key (type
    and requirements) could use. Pure."""
    matches = matcher(task_type, requirements)
    excluded = set(requirements.exclude_workers) | {running_on}
    needs = requirements.resources.amounts()
    best: WorkerView | None = None
    for worker in workers:
        if (
            not worker.accepting
            or worker.free_slots - taken.get(worker.worker_id, 0) <= 0
            or worker.worker_id in excluded
            or not matches(worker.capabilities)
        ):
            continue
        if requirements.resources.declared and not needs.fits_in(
            allocatable(worker.capabilities) - worker.reserved
        ):
            continue
        if any(matcher(t, r)(worker.capabilities) for t, r in queued.values()):
            continue  # queued work could run here: it comes first
        if best is None or (capability_rank(worker.capabilities), worker.worker_id) < (
            capability_rank(best.capabilities),
            best.worker_id,
        ):
            best = worker
    return best


@dataclass(slots=True)
class Pair:
    """A straggling attempt and its copy, both open until the first result."""

    original: int
    copy: int


class Speculation:
    """Which running attempts to watch, which are overdue, and the pairs in flight."""

    def __init__(self, settings: CoordinatorSettings) -> None:
        self.enabled = settings.speculation_enabled
        self.factor = settings.speculation_factor
        self.minimum = settings.speculation_min_seconds
        self.history = DurationHistory()
        #: task id -> its attempt and copy, while both may be open.
        self.pairs: dict[str, Pair] = {}
        self.counts: dict[SpeculationEvent, int] = dict.fromkeys(SpeculationEvent, 0)
        self._watch: list[tuple[float, int]] = []
        #: Attempts past their estimate still waiting for an idle worker, oldest first.
        self._overdue: dict[int, None] = {}
        self._next_check = 0.0

    def watch(self, attempt: AttemptRecord, task: TaskRecord, started: float) -> None:
        """Start timing ``attempt`` of ``task`` (running since ``started``) if it may be copied."""
        if not self.enabled or attempt.speculative or attempt.task_id in self.pairs:
            return
        spec = task.spec
        if not is_idempotent(spec):
            return
        estimate = estimate_seconds(spec, self.history, task.duration_key)
        if estimate is None:
            return
        due = started + straggling_after(estimate, self.factor, self.minimum)
        heapq.heappush(self._watch, (due, attempt.attempt_id))

    def record_duration(self, task: TaskRecord, seconds: float) -> None:
        """A counted completion of ``task`` took ``seconds`` (kept only while speculation
        is on: the history is read by :meth:`watch` alone, which copies nothing while it
        is off, and ``enabled`` is fixed for the process; filing every completion in it
        anyway was 3% of issue 14's simulator replay, which runs with it off)."""
        if seconds > 0 and self.enabled:
            self.history.add(task.duration_key, seconds)

    def due(self, now: float, open_attempts: Collection[int]) -> list[int]:
        """Overdue attempts still open and without a copy, oldest first, at most once
        per :data:`CHECK_INTERVAL_SECONDS` (an empty list in between)."""
        while self._watch and self._watch[0][0] <= now:
            _, attempt_id = heapq.heappop(self._watch)
            self._overdue[attempt_id] = None
        if not self._overdue or now < self._next_check:
            return []
        self._next_check = now + CHECK_INTERVAL_SECONDS
        for attempt_id in [a for a in self._overdue if a not in open_attempts]:
            del self._overdue[attempt_id]
        return list(self._overdue)

    def started(self, original: AttemptRecord, copy: AttemptRecord) -> None:
        self._overdue.pop(original.attempt_id, None)
        self.pairs[original.task_id] = Pair(original.attempt_id, copy.attempt_id)
        self.count(SpeculationEvent.STARTED)

    def count(self, event: SpeculationEvent) -> None:
        self.counts[event] += 1
