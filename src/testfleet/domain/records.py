"""The coordinator's records of tasks, attempts, results and workers.

The coordinator's state machine owns these (mutable, one writer) and hands
the changed ones to the store in a write batch, which the store encodes
before the next turn changes them again; the store maps them
onto the design document's tables (``distributed_tasks``,
``task_execution_history``, ``worker_nodes``) plus ``task_results``. Times are
seconds since the epoch from the injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from testfleet.domain.benchmark import BenchmarkRow
from testfleet.domain.enums import (
    AttemptStatus,
    ErrorClass,
    ResultDisposition,
    TaskStatus,
    WorkerStatus,
)
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.pytest_tasks import TestConfig, TestResultRow
from testfleet.domain.result import TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.domain.work_keys import spec_keys


@dataclass(slots=True)
class TaskRecord:
    """One row of ``distributed_tasks``: the task's spec and where it is now."""

    spec: TaskSpec
    status: TaskStatus
    create_time: float
    #: When it last entered the queue; orders the queue and drives priority aging.
    queued_at: float
    start_time: float | None = None
    end_time: float | None = None
    worker_id: str | None = None
    #: Attempts made so far (the design document's ``attempts`` column).
    attempts: int = 0
    current_attempt_id: int | None = None
    #: A retry waits until this time before it is queued again.
    not_before: float | None = None
    #: Attempts ended by a lost worker; retried beyond ``max_retries`` up to a fleet cap.
    lost_attempts: int = 0
    error_class: ErrorClass | None = None
    error_message: str | None = None
    #: Set while no connected worker can ever run it: names the unmet requirement.
    unschedulable_reason: str | None = None
    #: The id of the API token that submitted it (a submitter cancels only its
    #: own tasks); None for tasks submitted before tokens existed.
    submitted_by: str | None = None
    #: The requirement slice it waits or runs under (0: ``requirements``, i:
    #: ``fallbacks[i - 1]``; see domain/task_slices.py). In memory; each attempt's
    #: row keeps the slice it ran under.
    slice_index: int = 0
    #: Speculative copies started for it (coordinator/speculation.py): they do not
    #: count against ``max_retries``. In memory only.
    speculative_copies: int = 0
    #: Test tasks: node ids already recorded for this task (by any attempt), so
    #: a retried attempt skips them and none is recorded twice. In memory only;
    #: rebuilt from ``test_results`` after a restart.
    reported_tests: set[str] | None = field(default=None, compare=False, repr=False)
    #: Test tasks: the validated config, parsed once when first needed.
    test_config: TestConfig | None = field(default=None, compare=False, repr=False)
    # The spec's two work keys, worked out together (one JSON encoding of the
    # config) on first use and kept: the queue, the speed books and the
    # straggler estimate all read them, and encoding the config once per use
    # was 7% of a 10,000-worker simulation. The spec
    # never changes once the task is recorded, so neither can the keys.
    _work_key: str | None = field(default=None, init=False, compare=False, repr=False)
    _duration_key: str | None = field(default=None, init=False, compare=False, repr=False)
    #: ``spec.task_id``, kept as a plain attribute: a task's lifecycle reads it
    #: about ten times (its queue entry, the turn's output, the books), and as a
    #: property over the spec that was 2% of issue 14's simulator replay. It
    #: cannot go stale: no record's spec is ever replaced (a changed record is a
    #: new one, e.g. ``dataclasses.replace``, which runs ``__post_init__`` again).
    task_id: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.task_id = self.spec.task_id

    @property
    def work_key(self) -> str:
        """:func:`~testfleet.domain.work_keys.spec_work_key` of the spec (the queue's
        pending entry and the speed books file its durations under it)."""
        key = self._work_key
        if key is None:
            key, self._duration_key = spec_keys(self.spec)
            self._work_key = key
        return key

    @property
    def duration_key(self) -> str:
        """:func:`~testfleet.domain.work_keys.duration_key` of the spec (the straggler
        estimate's run times are kept under it)."""
        key = self._duration_key
        if key is None:
            self._work_key, key = spec_keys(self.spec)
            self._duration_key = key
        return key


@dataclass(slots=True)
class AttemptRecord:
    """One row of ``task_execution_history``: one try (lease) of a task on a worker."""

    attempt_id: int
    task_id: str
    worker_id: str
    attempt: int
    status: AttemptStatus
    #: When it was assigned.
    start_time: float
    #: When the worker accepted it and began running it.
    accepted_time: float | None = None
    end_time: float | None = None
    execution_time_seconds: float | None = None
    error_class: ErrorClass | None = None
    error_message: str | None = None
    hardware_metrics: dict[str, Any] = field(default_factory=dict)
    #: The requirement slice it was placed under (0: the task's ``requirements``).
    slice_index: int = 0
    #: A speculative copy of a straggling attempt (coordinator/speculation.py).
    speculative: bool = False


@dataclass(slots=True, frozen=True)
class ResultRecord:
    """One row of ``task_results``: a result document as a worker reported it,
    and what became of it (see :class:`ResultDisposition`)."""

    attempt_id: int
    task_id: str
    worker_id: str
    received_time: float
    disposition: ResultDisposition
    result: TaskResult

    @property
    def counted(self) -> bool:
        """Whether this result is its task's outcome (``task_results.counted``)."""
        return self.disposition is ResultDisposition.OUTCOME


@dataclass(slots=True)
class WorkerRecord:
    """One row of ``worker_nodes``."""

    worker_id: str
    hostname: str
    registration_time: float
    last_heartbeat: float
    status: WorkerStatus
    capabilities: WorkerCapabilities
    slots: int
    hardware_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def tags(self) -> dict[str, str]:
        return self.capabilities.tags


@dataclass(slots=True, frozen=True)
class NewRows:
    """Which tasks and attempts of a :class:`WriteBatch` get their row with it.

    The coordinator's state knows: it created them in the turn the batch
    holds. Every other task or attempt it writes was written in an earlier
    turn (or reloaded from the store), so its row exists. Told this, the store
    inserts the new rows and updates the others, which costs DuckDB about half
    of an upsert (and an update writes only the columns that change).
    """

    task_ids: set[str] = field(default_factory=set)
    attempt_ids: set[int] = field(default_factory=set)


@dataclass(slots=True)
class WriteBatch:
    """Everything one turn of the coordinator loop changed, committed in one transaction.

    Lists may hold the same task or attempt more than once (it changed twice in
    the turn); the store keeps the last one.
    """

    tasks: list[TaskRecord] = field(default_factory=list)
    attempts: list[AttemptRecord] = field(default_factory=list)
    results: list[ResultRecord] = field(default_factory=list)
    workers: list[WorkerRecord] = field(default_factory=list)
    #: One per batch size of each counted benchmark result in this turn.
    benchmark_rows: list[BenchmarkRow] = field(default_factory=list)
    #: One per test newly reported for a test task in this turn.
    test_rows: list[TestResultRow] = field(default_factory=list)
    #: Which tasks and attempts are new (see :class:`NewRows`); ``None`` when
    #: the writer does not know (a test, a tool): then every row is upserted.
    new_rows: NewRows | None = None

    def __bool__(self) -> bool:
        return bool(
            self.tasks
            or self.attempts
            or self.results
            or self.workers
            or self.benchmark_rows
            or self.test_rows
        )


@dataclass(slots=True)
class RecoveredState:
    """What the coordinator reloads from the store when it starts on an existing file."""

    #: Tasks that have not reached a terminal status.
    open_tasks: list[TaskRecord]
    #: The current attempt of each open task that was assigned or running.
    open_attempts: list[AttemptRecord]
    workers: list[WorkerRecord]
    #: The next free attempt id (one more than the largest stored).
    next_attempt_id: int
    #: Node ids already recorded for each open test task.
    reported_tests: dict[str, set[str]] = field(default_factory=dict)
    #: The next ``test_results.seq`` (one more than the largest stored).
    next_test_seq: int = 1
    #: Open speculative copies that are not their task's current attempt (a pair
    #: cut by the restart): recovery closes them, and their workers are told to stop.
    stale_attempts: list[AttemptRecord] = field(default_factory=list)
    #: Rows that could not be read back (edited by hand, or written by a build
    #: that let a bad value through), each described: left out of the state,
    #: and reported, rather than stopping the coordinator from starting.
    unreadable_rows: list[str] = field(default_factory=list)
