"""What one turn of the coordinator produced: writes, sends, closes and replies.

Callers: :class:`~testfleet.coordinator.state.CoordinatorState` records into a
:class:`TurnOutput` as it applies events; the loop takes it as
:class:`Effects` and commits the writes before it sends, closes or replies —
the order that makes "durable before acknowledged" hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from testfleet.coordinator.events import Reply
from testfleet.domain.benchmark import BenchmarkRow
from testfleet.domain.pytest_tasks import TestResultRow
from testfleet.domain.records import (
    AttemptRecord,
    NewRows,
    ResultRecord,
    TaskRecord,
    WorkerRecord,
    WriteBatch,
)
from testfleet.protocol.messages import Error, Message


@dataclass(slots=True)
class Effects:
    """One turn's output: commit ``batch`` first, then send, close and reply."""

    batch: WriteBatch
    sends: list[tuple[int, Message]]
    closes: list[tuple[int, Error | None]]
    replies: list[tuple[Reply, object]]


@dataclass(slots=True)
class TurnOutput:
    """Accumulates a turn's output; records changed twice are written once."""

    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    attempts: dict[int, AttemptRecord] = field(default_factory=dict)
    #: Tasks and attempts created this turn: their rows are inserted, every
    #: other task or attempt's row exists and is updated (see NewRows).
    new_rows: NewRows = field(default_factory=NewRows)
    workers: dict[str, WorkerRecord] = field(default_factory=dict)
    results: list[ResultRecord] = field(default_factory=list)
    benchmark_rows: list[BenchmarkRow] = field(default_factory=list)
    test_rows: list[TestResultRow] = field(default_factory=list)
    sends: list[tuple[int, Message]] = field(default_factory=list)
    closes: list[tuple[int, Error | None]] = field(default_factory=list)
    replies: list[tuple[Reply, object]] = field(default_factory=list)

    def task(self, task: TaskRecord) -> None:
        self.tasks[task.task_id] = task

    def new_task(self, task: TaskRecord) -> None:
        """A task just submitted: its row is written for the first time."""
        self.new_rows.task_ids.add(task.task_id)
        self.tasks[task.task_id] = task

    def attempt(self, attempt: AttemptRecord) -> None:
        self.attempts[attempt.attempt_id] = attempt

    def new_attempt(self, attempt: AttemptRecord) -> None:
        """An attempt just assigned: its row is written for the first time."""
        self.new_rows.attempt_ids.add(attempt.attempt_id)
        self.attempts[attempt.attempt_id] = attempt

    def worker(self, worker: WorkerRecord) -> None:
        self.workers[worker.worker_id] = worker

    def result(self, result: ResultRecord) -> None:
        self.results.append(result)

    def benchmark_row(self, row: BenchmarkRow) -> None:
        self.benchmark_rows.append(row)

    def test_row(self, row: TestResultRow) -> None:
        self.test_rows.append(row)

    def send(self, connection_id: int, message: Message) -> None:
        self.sends.append((connection_id, message))

    def close(self, connection_id: int, error: Error | None = None) -> None:
        self.closes.append((connection_id, error))

    def reply(self, reply: Reply, value: object) -> None:
        self.replies.append((reply, value))

    def __bool__(self) -> bool:
        return bool(
            self.tasks
            or self.attempts
            or self.workers
            or self.results
            or self.benchmark_rows
            or self.test_rows
            or self.sends
            or self.closes
            or self.replies
        )

    def take(self) -> Effects:
        """Hand the output over and start empty."""
        effects = Effects(
            batch=WriteBatch(
                tasks=list(self.tasks.values()),
                attempts=list(self.attempts.values()),
                results=self.results,
                workers=list(self.workers.values()),
                benchmark_rows=self.benchmark_rows,
                test_rows=self.test_rows,
                new_rows=self.new_rows,
            ),
            sends=self.sends,
            closes=self.closes,
            replies=self.replies,
        )
        self.tasks, self.attempts, self.workers = {}, {}, {}
        self.results, self.sends, self.closes, self.replies = [], [], [], []
        self.benchmark_rows, self.test_rows = [], []
        self.new_rows = NewRows()
        return effects
