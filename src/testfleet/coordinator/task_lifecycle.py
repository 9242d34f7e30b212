"""The lifecycle of tasks and attempts: the rules every event is applied by.

Callers: :class:`~testfleet.coordinator.state.CoordinatorState` is a
:class:`TaskLifecycle`: it maps each event (a submission, a worker's frame, a
tick) onto the moves defined here, and :mod:`~testfleet.coordinator.recovery`
rebuilds the same books from the store at start-up. Nothing here does I/O,
awaits or reads a clock: ``now`` is passed in, and every change goes to the
turn's output (:class:`~testfleet.coordinator.turn_output.TurnOutput`).

Rules kept here (ARCHITECTURE.md):

- At-least-once execution, exactly-once recording. Each try is an attempt
  with its own id (the lease). A result counts only if its attempt is the
  task's current one and it comes from the worker that attempt was given to;
  otherwise it is recorded with ``counted=False`` (late), or, when it comes
  from another worker or names another task, dropped (``stray_results``).
- A lost worker is an infrastructure fault: its attempts are requeued
  regardless of ``max_retries`` (up to ``max_lost_attempts``); one more lost
  attempt fails the task as ``lost_too_often`` (a poison task, which would
  otherwise take the fleet down one worker at a time). A failed or timed-out
  attempt is retried only as the task's ``retry_policy`` allows.
- A test task's tests are recorded once each, from whichever comes first: the
  worker's ``tests`` messages while the chunk runs, or the attempt's result
  (see :mod:`~testfleet.coordinator.chunk_ledger`).
- A straggler's speculative copy (:mod:`~testfleet.coordinator.speculation`)
  is a second open attempt of a running task: the first result of the two
  counts and the other attempt is cancelled; if one of them ends otherwise
  (lost, timed out, rejected) the other carries on as the task's attempt.
"""

from __future__ import annotations

import heapq

from testfleet.coordinator.assignments import assignment_for, slice_resources
from testfleet.coordinator.chunk_ledger import ChunkLedger
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.speculation import Speculation, SpeculationEvent, pick_worker
from testfleet.coordinator.submitter_quota import SubmitterQuota
from testfleet.coordinator.task_queue import TaskQueue, match_key
from testfleet.coordinator.turn_output import Effects, TurnOutput
from testfleet.coordinator.unschedulable import UnschedulableReasons
from testfleet.coordinator.worker_speed import SpeedChange, WorkerSpeeds
from testfleet.coordinator.workers import LiveWorker, WorkerRegistry
from testfleet.domain.benchmark import benchmark_rows
from testfleet.domain.enums import (
    AttemptStatus,
    ErrorClass,
    ResultDisposition,
    ResultStatus,
    TaskStatus,
    TaskType,
)
from testfleet.domain.pytest_tasks import TestOutcome, TestRecord, TestResultRow
from testfleet.domain.records import AttemptRecord, ResultRecord, TaskRecord, WorkerRecord
from testfleet.domain.task_slices import requirements_of_slice
from testfleet.domain.transitions import check_task_transition
from testfleet.domain.work_keys import hardware_class, node_work_key
from testfleet.protocol.messages import Assign, Assignment, AttemptResult, Cancel, Message

_ATTEMPT_STATUS_OF_RESULT = {
    ResultStatus.COMPLETED: AttemptStatus.COMPLETED,
    ResultStatus.FAILED: AttemptStatus.FAILED,
    ResultStatus.TIMED_OUT: AttemptStatus.TIMED_OUT,
    ResultStatus.CANCELLED: AttemptStatus.CANCELLED,
}

# Members each task's assign, accept and result read, as module names: on Python 3.11
# ``TaskStatus.ASSIGNED`` goes through the enum metaclass's ``__getattr__`` hook (0.2 us
# against 0.02 us), ~20 per task, 3% of issue 14's replay. Same objects: ``is`` holds.
_TASK_ASSIGNED, _TASK_RUNNING = TaskStatus.ASSIGNED, TaskStatus.RUNNING
_ATTEMPT_ASSIGNED, _ATTEMPT_RUNNING = AttemptStatus.ASSIGNED, AttemptStatus.RUNNING
_RESULT_COMPLETED, _RESULT_CANCELLED = ResultStatus.COMPLETED, ResultStatus.CANCELLED
_OUTCOME, _RETRIED = ResultDisposition.OUTCOME, ResultDisposition.RETRIED
_TEST, _BENCHMARK, _TASK_COMPLETED = TaskType.TEST, TaskType.BENCHMARK, TaskStatus.COMPLETED

#: How many closed attempts' holders are remembered to check late results
#: against (about 100 bytes each: ~10 MB at most). Late results arrive within
#: a reconnect or two of their attempt closing, far inside this window.
CLOSED_ATTEMPTS_REMEMBERED = 100_000


class TaskLifecycle:
    """Open tasks, their attempts and deadlines, and the moves between their states."""

    def __init__(self, settings: CoordinatorSettings, known_task_ids: set[str] | None) -> None:
        self.settings = settings
        #: Open tasks (queued, assigned or running); finished ones live in the store only.
        self.tasks: dict[str, TaskRecord] = {}
        #: Every task id ever submitted (the duplicate check).
        self.known_task_ids: set[str] = set(known_task_ids or ())
        self.queue = TaskQueue()
        #: Unfinished tasks per submitting token, and the limit on them.
        self.quota = SubmitterQuota(settings.max_queued_per_submitter)
        self.open_attempts: dict[int, AttemptRecord] = {}
        #: Who was given each recently closed attempt, and for which task, oldest
        #: first (at most CLOSED_ATTEMPTS_REMEMBERED): a late result is kept only
        #: from the worker that held the lease, for the task it was for.
        self._closed_attempts: dict[int, tuple[str, str]] = {}
        self.registry = WorkerRegistry()
        self.unschedulable = UnschedulableReasons()
        self.next_attempt_id = 1
        #: Results dropped because they named nothing this coordinator issued.
        self.stray_results = 0
        self._deadlines: list[tuple[float, int]] = []
        self._out = TurnOutput()
        #: Each test of a test task, recorded once (see chunk_ledger.py).
        self.ledger = ChunkLedger(self._out)
        #: Stragglers and their speculative copies (see speculation.py).
        self.speculation = Speculation(settings)
        #: Each worker's measured speed (worker_speed.py), fed by completed
        #: attempts and passed tests; slow-downs wait in ``speed_changes``
        #: for the loop to log (:meth:`take_speed_changes`).
        self.speeds = WorkerSpeeds()
        self.speed_changes: list[SpeedChange] = []
        self.ledger.on_test = self._measure_test

    @property
    def workers(self) -> dict[str, LiveWorker]:
        """Every worker ever seen, by id (changed only by the state machine)."""
        return self.registry.workers

    # ----------------------------------------------------------------- attempts

    def _assign(self, task_id: str, worker_id: str, now: float) -> Assignment:
        task = self.tasks[task_id]
        slice_index = self.queue.slice_of(task_id)
        self.queue.remove(task_id)
        check_task_transition(task.status, _TASK_ASSIGNED)
        attempt_id = self.next_attempt_id
        self.next_attempt_id += 1
        task.attempts += 1
        task.status = _TASK_ASSIGNED
        task.worker_id = worker_id
        task.current_attempt_id = attempt_id
        task.unschedulable_reason = None
        attempt = AttemptRecord(
            attempt_id=attempt_id,
            task_id=task_id,
            worker_id=worker_id,
            attempt=task.attempts,
            status=_ATTEMPT_ASSIGNED,
            start_time=now,
            slice_index=slice_index,
        )
        task.slice_index = slice_index
        self.open_attempts[attempt_id] = attempt
        self.workers[worker_id].hold(attempt_id, slice_resources(task, slice_index))
        self._out.new_attempt(attempt)
        self.mark_task(task)
        self.push_deadline(attempt, task)
        return assignment_for(task, attempt)

    def _accept(self, worker_id: str, attempt_id: int, now: float) -> None:
        attempt = self.open_attempts.get(attempt_id)
        if attempt is None or attempt.worker_id != worker_id:
            return
        task = self.tasks[attempt.task_id]
        if attempt.status is _ATTEMPT_ASSIGNED:
            attempt.status = _ATTEMPT_RUNNING
            attempt.accepted_time = now
            self._out.attempt(attempt)
            self.speculation.watch(attempt, task, now)
        if task.status is _TASK_ASSIGNED:
            check_task_transition(task.status, _TASK_RUNNING)
            task.status = _TASK_RUNNING
            if task.start_time is None:
                task.start_time = now
            self.mark_task(task)

    def _record_result(self, worker_id: str, item: AttemptResult, now: float) -> None:
        result = item.result
        attempt = self.open_attempts.get(item.attempt_id)
        task = self.tasks.get(attempt.task_id) if attempt is not None else None
        is_current = (
            attempt is not None
            and task is not None
            and attempt.worker_id == worker_id
            and result.task_id == attempt.task_id
            and (
                task.current_attempt_id == attempt.attempt_id
                or self._is_copy(task.task_id, attempt.attempt_id)
            )
        )
        if not is_current or attempt is None or task is None:
            # A late result (its worker was declared lost, the task was cancelled
            # or timed out): keep it in history, never as the outcome. One that
            # names an attempt never issued, a task never submitted, or another
            # worker's open attempt is dropped: storing it would break the
            # history's foreign keys or shadow the real result.
            issued = 0 < item.attempt_id < self.next_attempt_id
            if attempt is not None:
                lease: tuple[str, str] | None = (attempt.worker_id, attempt.task_id)
            else:
                lease = self._closed_attempts.get(item.attempt_id)
            # A result counts, or is kept, only from the worker the attempt was
            # given to. An attempt closed too long ago (or before a restart) to be
            # remembered has no known holder: its result is kept as late, which
            # never counts and never touches the task's outcome.
            owned = lease is None or lease == (worker_id, result.task_id)
            if issued and owned and result.task_id in self.known_task_ids:
                self._out.result(
                    ResultRecord(
                        item.attempt_id,
                        result.task_id,
                        worker_id,
                        now,
                        ResultDisposition.LATE,
                        result,
                    )
                )
            else:
                self.stray_results += 1
            return
        self._first_of_pair(task, attempt, now)
        status = _ATTEMPT_STATUS_OF_RESULT[result.status]
        error = result.error
        self._close_attempt(
            attempt,
            status,
            now,
            error.error_class if error else None,
            error.message if error else None,
            execution_time=result.execution_time_seconds,
            hardware_metrics=result.hardware_metrics,
        )
        if task.start_time is None:
            task.start_time = attempt.start_time
        task_type = task.spec.type
        if task_type is _TEST:
            self.ledger.from_result(task, item.attempt_id, worker_id, result.results, now)
        if result.status is _RESULT_COMPLETED:
            self.speculation.record_duration(
                task, result.execution_time_seconds or now - attempt.start_time
            )
            self._finish(task, _TASK_COMPLETED, now, None, None)
            retried = False
            if task_type is not _TEST:  # its tests are measured one by one
                self._measure(worker_id, task.work_key, result.execution_time_seconds)
        elif result.status is _RESULT_CANCELLED:
            # The worker gave the attempt up on its own (it is shutting down):
            # an infrastructure fault, not the task's.
            retried = self._retry_or_finish(task, now, infrastructure=True)
        else:
            retried = self._retry_or_finish(task, now, infrastructure=False)
        disposition = _RETRIED if retried else _OUTCOME
        counted = disposition is _OUTCOME
        self._out.result(
            ResultRecord(item.attempt_id, result.task_id, worker_id, now, disposition, result)
        )
        if counted and task_type is _BENCHMARK:
            for row in benchmark_rows(
                attempt_id=item.attempt_id,
                task_id=task.task_id,
                worker_id=worker_id,
                recorded_time=now,
                results=result.results,
                is_simulated=result.simulation_status.is_simulated,
            ):
                self._out.benchmark_row(row)

    def _record_streamed_tests(
        self, worker_id: str, attempt_id: int, records: list[TestRecord], now: float
    ) -> None:
        """Tests a running attempt finished, if it is still its task's current one."""
        attempt = self.open_attempts.get(attempt_id)
        task = self.tasks.get(attempt.task_id) if attempt is not None else None
        if (
            attempt is None
            or task is None
            or attempt.worker_id != worker_id
            or task.current_attempt_id != attempt_id
            or task.spec.type is not TaskType.TEST
        ):
            # Late (its worker was declared lost) or not this worker's: the
            # current attempt will report these tests itself.
            self.ledger.stray(len(records))
            return
        self.ledger.streamed(task, attempt_id, worker_id, records, now)

    def _expire_deadlines(self, now: float) -> None:
        """Close every attempt past its task's timeout (plus grace) and retry or
        finish its task."""
        while self._deadlines and self._deadlines[0][0] <= now:
            _, attempt_id = heapq.heappop(self._deadlines)
            attempt = self.open_attempts.get(attempt_id)
            if attempt is None:
                continue
            task = self.tasks[attempt.task_id]
            self._close_attempt(
                attempt,
                AttemptStatus.TIMED_OUT,
                now,
                ErrorClass.TIMEOUT,
                f"no result within timeout_seconds={task.spec.timeout_seconds:g} plus "
                f"{self.settings.timeout_grace_seconds:g} s of grace",
            )
            self._send_to_worker(
                attempt.worker_id, Cancel(attempt_ids=[attempt_id], reason="timed out")
            )
            self._retry_or_finish(task, now, infrastructure=False)

    def _lose_attempt(self, attempt: AttemptRecord, now: float, message: str) -> None:
        self._close_attempt(attempt, AttemptStatus.LOST, now, ErrorClass.WORKER_LOST, message)
        self._retry_or_finish(self.tasks[attempt.task_id], now, infrastructure=True)

    # ------------------------------------------------------------- speculation

    def _speculate(self, now: float) -> None:
        """Give overdue attempts a speculative copy on an idle worker (called on every
        tick; see speculation.py for when and where)."""
        overdue = self.speculation.due(now, self.open_attempts)
        if not overdue:
            return
        views = self.registry.views()
        queued = self.queue.key_requirements()
        taken: dict[str, int] = {}
        for attempt_id in overdue:
            original = self.open_attempts[attempt_id]
            task = self.tasks.get(original.task_id)
            if task is None or task.current_attempt_id != attempt_id:
                continue
            requirements = requirements_of_slice(task.spec, original.slice_index)
            worker = pick_worker(
                task.spec.type, requirements, original.worker_id, views, queued, taken
            )
            if worker is None:
                continue  # tried again at the next check
            taken[worker.worker_id] = taken.get(worker.worker_id, 0) + 1
            assignment = self._assign_copy(task, original, worker.worker_id, now)
            self._send_to_worker(worker.worker_id, Assign(assignments=[assignment]))

    def _assign_copy(
        self, task: TaskRecord, original: AttemptRecord, worker_id: str, now: float
    ) -> Assignment:
        """A second open attempt of a running task on ``worker_id``; the task stays running
        on its original attempt until one of the two reports."""
        attempt_id = self.next_attempt_id
        self.next_attempt_id += 1
        task.attempts += 1
        task.speculative_copies += 1
        copy = AttemptRecord(
            attempt_id=attempt_id,
            task_id=task.task_id,
            worker_id=worker_id,
            attempt=task.attempts,
            status=AttemptStatus.ASSIGNED,
            start_time=now,
            slice_index=original.slice_index,
            speculative=True,
        )
        self.open_attempts[attempt_id] = copy
        self.workers[worker_id].hold(attempt_id, slice_resources(task, original.slice_index))
        self._out.new_attempt(copy)
        self.mark_task(task)
        self.push_deadline(copy, task)
        self.speculation.started(original, copy)
        return assignment_for(task, copy)

    def close_stale_attempt(self, attempt: AttemptRecord, now: float) -> None:
        """Recovery: close a speculative copy whose pair the restart cut (only the task's
        current attempt resumes). Its worker, reconnecting with it, is told to cancel it;
        a result it still sends is kept as late."""
        attempt.status = AttemptStatus.CANCELLED
        attempt.end_time = now
        attempt.error_class = ErrorClass.CANCELLED
        attempt.error_message = (
            "speculative pair: the coordinator restarted; the task's current attempt carries on"
        )
        self._closed_attempts[attempt.attempt_id] = (attempt.worker_id, attempt.task_id)
        self._out.attempt(attempt)
        self.speculation.count(SpeculationEvent.CANCELLED)

    def _is_copy(self, task_id: str, attempt_id: int) -> bool:
        pair = self.speculation.pairs.get(task_id)
        return pair is not None and pair.copy == attempt_id

    def _first_of_pair(self, task: TaskRecord, winner: AttemptRecord, now: float) -> None:
        """``winner``'s result came first: cancel its twin and make it the task's attempt."""
        pair = self.speculation.pairs.get(task.task_id)
        if pair is None:
            return
        if winner.attempt_id == pair.copy:
            self.speculation.count(SpeculationEvent.WON)
        task.current_attempt_id = winner.attempt_id
        task.worker_id = winner.worker_id
        self._end_pair(task, now, f"attempt {winner.attempt_id} reported first")

    def _end_pair(self, task: TaskRecord, now: float, why: str) -> None:
        """Cancel whichever attempt of ``task``'s pair is open and not its current one."""
        pair = self.speculation.pairs.pop(task.task_id, None)
        if pair is None:
            return
        for attempt_id in (pair.original, pair.copy):
            loser = self.open_attempts.get(attempt_id)
            if loser is None or attempt_id == task.current_attempt_id:
                continue
            self._close_attempt(
                loser,
                AttemptStatus.CANCELLED,
                now,
                ErrorClass.CANCELLED,
                f"speculative pair: {why}",
                keep_task_error=True,
            )
            self._send_to_worker(
                loser.worker_id, Cancel(attempt_ids=[attempt_id], reason="cancelled")
            )
            self.speculation.count(SpeculationEvent.CANCELLED)

    def _survivor_carries_on(self, task: TaskRecord) -> bool:
        """After one attempt of a pair ended without a result (lost, timed out,
        rejected): the other, if still open, becomes the task's attempt."""
        pair = self.speculation.pairs.get(task.task_id)
        if pair is None:
            return False
        del self.speculation.pairs[task.task_id]
        for attempt_id in (pair.original, pair.copy):
            survivor = self.open_attempts.get(attempt_id)
            if survivor is not None:
                task.current_attempt_id = attempt_id
                task.worker_id = survivor.worker_id
                self.mark_task(task)
                return True
        return False

    # -------------------------------------------------------------------- speed

    def _measure(self, worker_id: str, key: str, seconds: float) -> None:
        """File a finished piece of work's duration in the speed books."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return
        hardware = hardware_class(worker.record.capabilities.hardware)
        change = self.speeds.record(worker_id, hardware, key, seconds)
        if change is not None:
            self.speed_changes.append(change)

    def _measure_test(self, row: TestResultRow) -> None:
        # Only passed tests: a failure may stop anywhere, a skip takes no time.
        if row.outcome is TestOutcome.PASSED:
            self._measure(
                row.worker_id, node_work_key(row.project, row.nodeid), row.duration_seconds
            )

    def take_speed_changes(self) -> list[SpeedChange]:
        """Workers that turned slow or recovered since the last call (the loop logs them)."""
        changes, self.speed_changes = self.speed_changes, []
        return changes

    # ------------------------------------------------------------------ helpers

    def push_deadline(self, attempt: AttemptRecord, task: TaskRecord) -> None:
        deadline = (
            attempt.start_time + task.spec.timeout_seconds + self.settings.timeout_grace_seconds
        )
        heapq.heappush(self._deadlines, (deadline, attempt.attempt_id))

    def _close_attempt(
        self,
        attempt: AttemptRecord,
        status: AttemptStatus,
        now: float,
        error_class: ErrorClass | None,
        message: str | None,
        *,
        execution_time: float | None = None,
        hardware_metrics: dict[str, object] | None = None,
        keep_task_error: bool = False,
    ) -> None:
        attempt.status = status
        attempt.end_time = now
        attempt.error_class = error_class
        attempt.error_message = message
        attempt.execution_time_seconds = execution_time
        if hardware_metrics:
            attempt.hardware_metrics = dict(hardware_metrics)
        del self.open_attempts[attempt.attempt_id]
        self._closed_attempts[attempt.attempt_id] = (attempt.worker_id, attempt.task_id)
        if len(self._closed_attempts) > CLOSED_ATTEMPTS_REMEMBERED:
            # Dicts keep insertion order: the first key is the oldest closed.
            del self._closed_attempts[next(iter(self._closed_attempts))]
        worker = self.workers.get(attempt.worker_id)
        if worker is not None:
            worker.release(attempt.attempt_id)
        self._out.attempt(attempt)
        task = self.tasks.get(attempt.task_id)
        if task is not None and not keep_task_error:
            task.error_class = error_class
            task.error_message = message

    def _retry_or_finish(self, task: TaskRecord, now: float, *, infrastructure: bool) -> bool:
        """After an attempt ended without success: requeue the task if its policy
        allows (True), or give it its final status (False). If the attempt that ended
        had a speculative twin still running, that one carries on instead (True)."""
        if self._survivor_carries_on(task):
            return True
        policy = task.spec.retry_policy
        if infrastructure:
            task.lost_attempts += 1
            allowed = task.lost_attempts <= self.settings.max_lost_attempts
            delay = 0.0
        else:
            # Copies are not tries of their own: one that lost the race was cancelled.
            failures = task.attempts - task.lost_attempts - task.speculative_copies
            allowed = failures <= policy.max_retries
            delay = policy.retry_delay_seconds
        if not allowed:
            final = TaskStatus.FAILED
            error_class, message = task.error_class, task.error_message
            if task.error_class is ErrorClass.TIMEOUT:
                final = TaskStatus.TIMED_OUT
            elif infrastructure and task.error_class is ErrorClass.WORKER_LOST:
                error_class = ErrorClass.LOST_TOO_OFTEN
                message = (
                    f"stopped after {task.lost_attempts} attempts lost their workers "
                    f"(max_lost_attempts={self.settings.max_lost_attempts}): this task may be "
                    f"taking down the workers it runs on; the last: {task.error_message}"
                )
            self._finish(task, final, now, error_class, message)
            return False
        check_task_transition(task.status, TaskStatus.QUEUED)
        task.status = TaskStatus.QUEUED
        task.current_attempt_id = None
        if delay > 0:
            task.not_before = now + delay
            self.queue.push_delayed(task.task_id, task.not_before)
        else:
            task.queued_at = now
            self._requeue(task, now)
        self.mark_task(task)
        return True

    def _requeue(self, task: TaskRecord, now: float) -> None:
        """Queue ``task`` again under the slice in force now (slices count from submission)."""
        key = self.queue.push(
            task.spec,
            task.queued_at,
            submitted_at=task.create_time,
            now=now,
            work_key=task.work_key,
        )
        task.slice_index = self.queue.slice_of(task.task_id)
        task.unschedulable_reason = self.unschedulable.get(key)

    def _advance_slices(self, now: float) -> None:
        """Move queued tasks whose requirement slice expired onto the next one (called
        on every tick). Their new key's reason, if it is already known, applies at once;
        the turn's scheduling round judges new keys."""
        for task_id, index in self.queue.advance_slices(lambda t: self.tasks[t].spec, now):
            task = self.tasks[task_id]
            task.slice_index = index
            task.unschedulable_reason = self.unschedulable.get(match_key(task.spec, index))
            self.mark_task(task)

    def _finish(
        self,
        task: TaskRecord,
        status: TaskStatus,
        now: float,
        error_class: ErrorClass | None,
        message: str | None,
    ) -> None:
        self._end_pair(task, now, f"its task ended ({status.value})")
        check_task_transition(task.status, status)
        task.status = status
        task.end_time = now
        task.error_class = error_class
        task.error_message = message
        task.unschedulable_reason = None
        self.mark_task(task)
        # Finished tasks live on in the store only; memory holds open work.
        del self.tasks[task.task_id]
        self.quota.release(task.submitted_by)
        self.ledger.forget(task.task_id)

    def _send_to_worker(self, worker_id: str, message: Message) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None and worker.connection_id is not None:
            self._out.send(worker.connection_id, message)

    def mark_task(self, task: TaskRecord) -> None:
        self._out.task(task)

    def mark_worker_record(self, record: WorkerRecord) -> None:
        """Write a worker's row with this turn (recovery marks every worker disconnected)."""
        self._out.worker(record)

    def _mark_worker(self, worker: LiveWorker) -> None:
        worker.heartbeat_written_at = worker.record.last_heartbeat
        self._out.worker(worker.record)

    # ------------------------------------------------------------------ output

    def take_effects(self) -> Effects:
        """Hand over this turn's writes, sends, closes and replies (and forget them)."""
        return self._out.take()

    def has_pending_effects(self) -> bool:
        return bool(self._out)
