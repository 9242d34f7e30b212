"""Coordinator state: tasks, attempts and workers, changed only by events.

Who calls it: :class:`testfleet.coordinator.loop.CoordinatorLoop`, the one
writer, calls :meth:`CoordinatorState.handle` for each event and
:meth:`CoordinatorState.schedule` once per turn, then
:meth:`CoordinatorState.take_effects` to get what must be committed, sent and
answered. Nothing here does I/O, awaits or reads a clock: ``now`` is passed in,
so unit tests drive it with a fake clock.

Rules kept here (docs/design.md):

- At-least-once execution, exactly-once recording. Each try is an attempt
  with its own id (the lease). A result counts only if its attempt is the
  task's current one; otherwise it is recorded with ``counted=False``.
- A lost worker is an infrastructure fault: its attempts are requeued
  regardless of ``max_retries`` (up to ``max_lost_attempts``). A failed or
  timed-out attempt is retried only as the task's ``retry_policy`` allows.
- A disconnected worker keeps its attempts until the heartbeat timeout passes,
  so a network blip or a coordinator restart does not rerun its work.
- A test task's tests are recorded once each, from whichever comes first: the
  worker's ``tests`` messages while the chunk runs, or the attempt's result. A
  retried attempt is told which tests are already recorded and skips them.
"""

from __future__ import annotations

import heapq

from testfleet.coordinator.chunk_ledger import ChunkLedger
from testfleet.coordinator.events import (
    Accepted,
    CancelOutcome,
    CancelTasks,
    DrainWorker,
    Event,
    RefusalReason,
    Refused,
    Reply,
    SubmitTasks,
    Tick,
    UndrainWorker,
    WorkerConnected,
    WorkerDisconnected,
    WorkerFrame,
)
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.task_queue import TaskQueue, match_key
from testfleet.coordinator.turn_output import Effects, TurnOutput
from testfleet.coordinator.unschedulable import UnschedulableReasons
from testfleet.coordinator.workers import (
    OPEN_WORKER_STATUSES,
    LiveWorker,
    Refusal,
    WorkerRegistry,
)
from testfleet.domain.benchmark import benchmark_rows
from testfleet.domain.enums import (
    AttemptStatus,
    ErrorClass,
    ResultDisposition,
    ResultStatus,
    TaskStatus,
    TaskType,
    WorkerStatus,
)
from testfleet.domain.pytest_tasks import TestRecord
from testfleet.domain.records import (
    AttemptRecord,
    RecoveredState,
    ResultRecord,
    TaskRecord,
)
from testfleet.domain.task import TaskSpec
from testfleet.domain.transitions import check_task_transition
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Ack,
    Assign,
    Assignment,
    AttemptResult,
    Bye,
    Cancel,
    Drain,
    Error,
    Heartbeat,
    Hello,
    LogChunk,
    Message,
    ProtocolErrorCode,
    Reject,
    Result,
    TestReports,
    Welcome,
)
from testfleet.scheduling.scheduler import schedule
from testfleet.scheduling.view import SchedulingView

_ATTEMPT_STATUS_OF_RESULT = {
    ResultStatus.COMPLETED: AttemptStatus.COMPLETED,
    ResultStatus.FAILED: AttemptStatus.FAILED,
    ResultStatus.TIMED_OUT: AttemptStatus.TIMED_OUT,
    ResultStatus.CANCELLED: AttemptStatus.CANCELLED,
}


#: How often a worker's heartbeat time and load are written to ``worker_nodes``.
HEARTBEAT_WRITE_INTERVAL_SECONDS = 10.0


class CoordinatorState:
    """All mutable coordinator state; see the module docstring for the rules."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        now: float,
        recovered: RecoveredState | None = None,
        known_task_ids: set[str] | None = None,
    ) -> None:
        self.settings = settings
        self.started_at = now
        self.tasks: dict[str, TaskRecord] = {}
        self.known_task_ids: set[str] = set(known_task_ids or ())
        self.queue = TaskQueue()
        self.open_attempts: dict[int, AttemptRecord] = {}
        self.registry = WorkerRegistry()
        self.unschedulable = UnschedulableReasons()
        self.next_attempt_id = 1
        #: Results dropped because they named nothing this coordinator issued.
        self.stray_results = 0
        #: Rows of the file that recovery could not read and left out (reported
        #: in the log at start-up and by the stats API).
        self.unreadable_rows: list[str] = []
        self._deadlines: list[tuple[float, int]] = []
        self._topology_changed = True
        self._out = TurnOutput()
        #: Each test of a test task, recorded once (see chunk_ledger.py).
        self.ledger = ChunkLedger(self._out)
        if recovered is not None:
            self._recover(recovered, now)

    # ----------------------------------------------------------------- recovery

    def _recover(self, recovered: RecoveredState, now: float) -> None:
        """Rebuild from the store after a restart.

        Every worker starts disconnected with a fresh grace period: one that
        reconnects in time keeps the attempts it still runs; the rest are
        declared lost by the usual heartbeat expiry and their tasks requeued.
        """
        self.next_attempt_id = recovered.next_attempt_id
        self.ledger.next_seq = recovered.next_test_seq
        self.unreadable_rows = list(recovered.unreadable_rows)
        for record in self.registry.recover(recovered.workers, now):
            self._out.worker(record)
        attempts = {a.attempt_id: a for a in recovered.open_attempts}
        for task in sorted(recovered.open_tasks, key=lambda t: (t.queued_at, t.task_id)):
            self.tasks[task.task_id] = task
            if task.task_id in recovered.reported_tests:
                task.reported_tests = set(recovered.reported_tests[task.task_id])
            self.known_task_ids.add(task.task_id)
            if task.status is TaskStatus.QUEUED:
                self._enqueue_recovered(task, now)
                continue
            attempt = attempts.get(task.current_attempt_id or -1)
            live = self.workers.get(attempt.worker_id) if attempt else None
            if attempt is None or live is None:
                # An assigned task without its attempt or worker cannot be resumed.
                task.status = TaskStatus.QUEUED
                task.current_attempt_id = None
                self._mark_task(task)
                self._enqueue_recovered(task, now)
                continue
            self.open_attempts[attempt.attempt_id] = attempt
            live.attempts.add(attempt.attempt_id)
            self._push_deadline(attempt, task)

    def _enqueue_recovered(self, task: TaskRecord, now: float) -> None:
        if task.not_before is not None and task.not_before > now:
            self.queue.push_delayed(task.task_id, task.not_before)
        else:
            self.queue.push(task.spec, task.queued_at)

    @property
    def workers(self) -> dict[str, LiveWorker]:
        """Every worker ever seen, by id (read by the API; changed only here)."""
        return self.registry.workers

    # ------------------------------------------------------------------ events

    def handle(self, event: Event, now: float) -> None:
        """Apply one event. Called by the loop, in arrival order."""
        match event:
            case SubmitTasks(specs=specs, reply=reply):
                self._submit(specs, reply, now)
            case CancelTasks(task_ids=task_ids, reply=reply):
                self._cancel(task_ids, reply, now)
            case DrainWorker(worker_id=worker_id, reply=reply):
                self._drain(worker_id, reply)
            case UndrainWorker(worker_id=worker_id, reply=reply):
                self._undrain(worker_id, reply)
            case WorkerConnected(connection_id=connection_id, hello=hello):
                self._hello(connection_id, hello, now)
            case WorkerFrame(connection_id=connection_id, message=message):
                self._frame(connection_id, message, now)
            case WorkerDisconnected(connection_id=connection_id):
                self._disconnected(connection_id)
            case Tick():
                self._tick(now)

    def _submit(self, specs: list[TaskSpec], reply: Reply, now: float) -> None:
        seen: set[str] = set()
        duplicates: list[str] = []
        for spec in specs:
            if spec.task_id in seen or spec.task_id in self.known_task_ids:
                duplicates.append(spec.task_id)
            seen.add(spec.task_id)
        if duplicates:
            shown = ", ".join(repr(d) for d in duplicates[:5])
            more = f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else ""
            self._out.reply(
                reply,
                Refused(
                    RefusalReason.DUPLICATE_TASK_ID,
                    f"task_id {shown}{more} already submitted; task ids must be unique "
                    "(omit task_id to have one generated). Nothing in this request was "
                    "accepted.",
                    duplicates,
                ),
            )
            return
        for spec in specs:
            task = TaskRecord(spec=spec, status=TaskStatus.QUEUED, create_time=now, queued_at=now)
            task.unschedulable_reason = self.unschedulable.get(match_key(spec))
            self.tasks[spec.task_id] = task
            self.known_task_ids.add(spec.task_id)
            self.queue.push(spec, now)
            self._out.new_task(task)
        self._out.reply(reply, Accepted([s.task_id for s in specs]))

    def _cancel(self, task_ids: list[str], reply: Reply, now: float) -> None:
        """Cancel every task named, in one event (see :class:`CancelTasks` for why).

        Queued tasks leave the queue; a running attempt is closed and its worker
        told to stop it. Slots freed here are filled only by this turn's
        :meth:`schedule`, after every task of the request is already cancelled.
        """
        outcome = CancelOutcome(cancelled=[], already_finished=[], not_found=[])
        for task_id in dict.fromkeys(task_ids):  # each id once, in the order given
            task = self.tasks.get(task_id)
            if task is None:
                finished = task_id in self.known_task_ids
                (outcome.already_finished if finished else outcome.not_found).append(task_id)
                continue
            if task.status is TaskStatus.QUEUED:
                self.queue.remove(task_id)
            else:
                attempt = self.open_attempts.get(task.current_attempt_id or -1)
                if attempt is not None:
                    self._close_attempt(
                        attempt,
                        AttemptStatus.CANCELLED,
                        now,
                        ErrorClass.CANCELLED,
                        "cancelled by user",
                    )
                    self._send_to_worker(
                        attempt.worker_id,
                        Cancel(attempt_ids=[attempt.attempt_id], reason="cancelled"),
                    )
            self._finish(task, TaskStatus.CANCELLED, now, ErrorClass.CANCELLED, "cancelled by user")
            outcome.cancelled.append(task_id)
        self._out.reply(reply, outcome)

    def _drain(self, worker_id: str, reply: Reply) -> None:
        worker = self.workers.get(worker_id)
        if worker is None or worker.record.status not in OPEN_WORKER_STATUSES:
            self._out.reply(
                reply,
                Refused(RefusalReason.NOT_FOUND, f"no connected worker {worker_id!r}", [worker_id]),
            )
            return
        worker.draining = True
        if worker.record.status is WorkerStatus.CONNECTED:
            worker.record.status = WorkerStatus.DRAINING
        self._mark_worker(worker)
        self._topology_changed = True
        if worker.connection_id is not None:
            self._out.send(worker.connection_id, Drain(reason="drain requested"))
        self._out.reply(reply, Accepted([worker_id]))

    def _undrain(self, worker_id: str, reply: Reply) -> None:
        """Undo a drain: the worker takes new work again (a no-op if it was not draining)."""
        worker = self.workers.get(worker_id)
        if worker is None or worker.record.status not in OPEN_WORKER_STATUSES:
            self._out.reply(
                reply,
                Refused(RefusalReason.NOT_FOUND, f"no connected worker {worker_id!r}", [worker_id]),
            )
            return
        if worker.draining:
            worker.draining = False
            if worker.record.status is WorkerStatus.DRAINING:
                worker.record.status = WorkerStatus.CONNECTED
            self._mark_worker(worker)
            self._topology_changed = True
        self._out.reply(reply, Accepted([worker_id]))

    # ----------------------------------------------------------- worker channel

    def _hello(self, connection_id: int, hello: Hello, now: float) -> None:
        admission = self.registry.admit(connection_id, hello, now)
        if isinstance(admission, Refusal):
            self._refuse_connection(connection_id, admission.code, admission.message)
            return
        if admission.replaced_connection is not None:
            self._out.close(admission.replaced_connection, None)
        self._mark_worker(admission.worker)
        self._topology_changed = True
        for attempt_id in admission.lost:
            self._lose_attempt(
                self.open_attempts[attempt_id],
                now,
                f"worker {hello.worker_id!r} reconnected without attempt {attempt_id}",
            )
        self._out.send(
            connection_id,
            Welcome(
                protocol_version=PROTOCOL_VERSION,
                worker_id=hello.worker_id,
                codec=hello.codecs[0],
                heartbeat_interval_seconds=self.settings.heartbeat_interval_seconds,
                heartbeat_timeout_seconds=self.settings.heartbeat_timeout_seconds,
                keep_attempts=admission.keep,
                cancel_attempts=admission.cancel,
            ),
        )

    def _refuse_connection(self, connection_id: int, code: ProtocolErrorCode, message: str) -> None:
        self._out.close(connection_id, Error(code=code, message=message))

    def _frame(self, connection_id: int, message: Message, now: float) -> None:
        worker = self.registry.by_connection(connection_id)
        if worker is None:
            return  # a replaced or refused connection: its frames no longer count
        worker_id = worker.record.worker_id
        worker.record.last_heartbeat = now
        match message:
            case Heartbeat(load=load):
                worker.record.hardware_metrics = load.model_dump()
                # Liveness lives in memory; the row's heartbeat and load are
                # informational, so they are written at most every interval
                # (a fleet's heartbeats would otherwise add a statement to
                # almost every commit).
                if now - worker.heartbeat_written_at >= HEARTBEAT_WRITE_INTERVAL_SECONDS:
                    self._mark_worker(worker)
            case Accept(attempt_ids=attempt_ids):
                for attempt_id in attempt_ids:
                    self._accept(worker_id, attempt_id, now)
            case Reject(attempt_id=attempt_id, reason=reason):
                attempt = self.open_attempts.get(attempt_id)
                if attempt is not None and attempt.worker_id == worker_id:
                    self._close_attempt(
                        attempt,
                        AttemptStatus.FAILED,
                        now,
                        ErrorClass.INFRASTRUCTURE,
                        f"rejected by worker: {reason}",
                    )
                    self._retry_or_finish(self.tasks[attempt.task_id], now, infrastructure=True)
            case Result(results=results):
                for item in results:
                    self._record_result(worker_id, item, now)
                self._out.send(connection_id, Ack(attempt_ids=[r.attempt_id for r in results]))
            case TestReports(attempt_id=attempt_id, records=records):
                self._record_streamed_tests(worker_id, attempt_id, records, now)
            case LogChunk():
                pass  # accepted and dropped until the dashboard streams log tails
            case Bye():
                worker.leaving = True
            case _:
                self._refuse_connection(
                    connection_id,
                    ProtocolErrorCode.INVALID_MESSAGE,
                    f"a worker may not send '{message.type.value}' messages",
                )

    def _accept(self, worker_id: str, attempt_id: int, now: float) -> None:
        attempt = self.open_attempts.get(attempt_id)
        if attempt is None or attempt.worker_id != worker_id:
            return
        if attempt.status is AttemptStatus.ASSIGNED:
            attempt.status = AttemptStatus.RUNNING
            attempt.accepted_time = now
            self._out.attempt(attempt)
        task = self.tasks[attempt.task_id]
        if task.status is TaskStatus.ASSIGNED:
            check_task_transition(task.status, TaskStatus.RUNNING)
            task.status = TaskStatus.RUNNING
            if task.start_time is None:
                task.start_time = now
            self._mark_task(task)

    def _record_result(self, worker_id: str, item: AttemptResult, now: float) -> None:
        result = item.result
        attempt = self.open_attempts.get(item.attempt_id)
        task = self.tasks.get(attempt.task_id) if attempt is not None else None
        is_current = (
            attempt is not None
            and task is not None
            and attempt.worker_id == worker_id
            and result.task_id == attempt.task_id
            and task.current_attempt_id == attempt.attempt_id
        )
        if not is_current or attempt is None or task is None:
            # A late result (its worker was declared lost, the task was cancelled
            # or timed out): keep it in history, never as the outcome. One that
            # names an attempt never issued, a task never submitted, or another
            # worker's open attempt is dropped: storing it would break the
            # history's foreign keys or shadow the real result.
            issued = 0 < item.attempt_id < self.next_attempt_id
            owned = attempt is None or attempt.worker_id == worker_id
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
        if task.spec.type is TaskType.TEST:
            self.ledger.from_result(task, item.attempt_id, worker_id, result.results, now)
        if result.status is ResultStatus.COMPLETED:
            self._finish(task, TaskStatus.COMPLETED, now, None, None)
            retried = False
        elif result.status is ResultStatus.CANCELLED:
            # The worker gave the attempt up on its own (it is shutting down):
            # an infrastructure fault, not the task's.
            retried = self._retry_or_finish(task, now, infrastructure=True)
        else:
            retried = self._retry_or_finish(task, now, infrastructure=False)
        disposition = ResultDisposition.RETRIED if retried else ResultDisposition.OUTCOME
        counted = disposition is ResultDisposition.OUTCOME
        self._out.result(
            ResultRecord(item.attempt_id, result.task_id, worker_id, now, disposition, result)
        )
        if counted and task.spec.type is TaskType.BENCHMARK:
            for row in benchmark_rows(
                attempt_id=item.attempt_id,
                task_id=task.task_id,
                worker_id=worker_id,
                recorded_time=now,
                results=result.results,
                is_simulated=result.simulation_status.is_simulated,
            ):
                self._out.benchmark_row(row)

    # -------------------------------------------------------------------- tests

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

    def _disconnected(self, connection_id: int) -> None:
        worker = self.registry.disconnect(connection_id)
        if worker is not None:
            self._mark_worker(worker)
            self._topology_changed = True

    # ------------------------------------------------------------------ timers

    def _tick(self, now: float) -> None:
        for task_id in self.queue.pop_due(now):
            task = self.tasks.get(task_id)
            if task is not None and task.status is TaskStatus.QUEUED:
                task.not_before = None
                task.queued_at = now
                self.queue.push(task.spec, now)
                self._mark_task(task)
        for worker in self.registry.silent(now, self.settings.heartbeat_timeout_seconds):
            self._lose_worker(worker, now)
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

    def _lose_worker(self, worker: LiveWorker, now: float) -> None:
        silent = now - worker.record.last_heartbeat
        connection = self.registry.mark_lost(worker)
        if connection is not None:
            self._out.close(connection, None)
        for attempt_id in sorted(worker.attempts):
            self._lose_attempt(
                self.open_attempts[attempt_id],
                now,
                f"worker {worker.record.worker_id!r} lost: no heartbeat for {silent:.1f} s",
            )
        self._mark_worker(worker)
        self._topology_changed = True

    def _lose_attempt(self, attempt: AttemptRecord, now: float, message: str) -> None:
        self._close_attempt(attempt, AttemptStatus.LOST, now, ErrorClass.WORKER_LOST, message)
        self._retry_or_finish(self.tasks[attempt.task_id], now, infrastructure=True)

    # --------------------------------------------------------------- scheduling

    def schedule(self, now: float) -> None:
        """Place queued tasks on free workers; refresh unschedulable reasons when
        the set of workers or of requirement keys changed. Called once per turn."""
        keys_changed = self.queue.take_keys_changed() or self._topology_changed
        self._topology_changed = False
        views = self.registry.views()
        has_free = any(v.accepting and v.free_slots > 0 for v in views)
        if not keys_changed and (not has_free or len(self.queue) == 0):
            return
        decisions = schedule(
            SchedulingView(
                now=now,
                pending_by_priority=self.queue.pending_by_priority(),
                workers=views,
                pending_keys=self.queue.key_requirements() if keys_changed else {},
                aging_seconds=self.settings.aging_seconds,
            )
        )
        assignments: dict[str, list[Assignment]] = {}
        for placement in decisions.placements:
            assignment = self._assign(placement.task_id, placement.worker_id, now)
            assignments.setdefault(placement.worker_id, []).append(assignment)
        for worker_id, batch in assignments.items():
            self._send_to_worker(worker_id, Assign(assignments=batch))
        if keys_changed:
            self._refresh_unschedulable(decisions.unschedulable)

    def _assign(self, task_id: str, worker_id: str, now: float) -> Assignment:
        task = self.tasks[task_id]
        self.queue.remove(task_id)
        check_task_transition(task.status, TaskStatus.ASSIGNED)
        attempt_id = self.next_attempt_id
        self.next_attempt_id += 1
        task.attempts += 1
        task.status = TaskStatus.ASSIGNED
        task.worker_id = worker_id
        task.current_attempt_id = attempt_id
        task.unschedulable_reason = None
        attempt = AttemptRecord(
            attempt_id=attempt_id,
            task_id=task_id,
            worker_id=worker_id,
            attempt=task.attempts,
            status=AttemptStatus.ASSIGNED,
            start_time=now,
        )
        self.open_attempts[attempt_id] = attempt
        self.workers[worker_id].attempts.add(attempt_id)
        self._out.new_attempt(attempt)
        self._mark_task(task)
        self._push_deadline(attempt, task)
        return Assignment(
            attempt_id=attempt_id,
            attempt=task.attempts,
            task=task.spec,
            completed_tests=sorted(task.reported_tests or ()),
        )

    def _refresh_unschedulable(self, reasons: dict[str, str]) -> None:
        for key in self.unschedulable.update(reasons):
            for task_id in self.queue.task_ids_with_key(key):
                task = self.tasks[task_id]
                task.unschedulable_reason = self.unschedulable.get(key)
                self._mark_task(task)

    # ------------------------------------------------------------------ helpers

    def _push_deadline(self, attempt: AttemptRecord, task: TaskRecord) -> None:
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
    ) -> None:
        attempt.status = status
        attempt.end_time = now
        attempt.error_class = error_class
        attempt.error_message = message
        attempt.execution_time_seconds = execution_time
        if hardware_metrics:
            attempt.hardware_metrics = dict(hardware_metrics)
        del self.open_attempts[attempt.attempt_id]
        worker = self.workers.get(attempt.worker_id)
        if worker is not None:
            worker.attempts.discard(attempt.attempt_id)
        self._out.attempt(attempt)
        task = self.tasks.get(attempt.task_id)
        if task is not None:
            task.error_class = error_class
            task.error_message = message

    def _retry_or_finish(self, task: TaskRecord, now: float, *, infrastructure: bool) -> bool:
        """After an attempt ended without success: requeue the task if its policy
        allows (True), or give it its final status (False)."""
        policy = task.spec.retry_policy
        if infrastructure:
            task.lost_attempts += 1
            allowed = task.lost_attempts <= self.settings.max_lost_attempts
            delay = 0.0
        else:
            failures = task.attempts - task.lost_attempts
            allowed = failures <= policy.max_retries
            delay = policy.retry_delay_seconds
        if not allowed:
            final = TaskStatus.FAILED
            if task.error_class is ErrorClass.TIMEOUT:
                final = TaskStatus.TIMED_OUT
            self._finish(task, final, now, task.error_class, task.error_message)
            return False
        check_task_transition(task.status, TaskStatus.QUEUED)
        task.status = TaskStatus.QUEUED
        task.current_attempt_id = None
        if delay > 0:
            task.not_before = now + delay
            self.queue.push_delayed(task.task_id, task.not_before)
        else:
            task.queued_at = now
            task.unschedulable_reason = self.unschedulable.get(match_key(task.spec))
            self.queue.push(task.spec, now)
        self._mark_task(task)
        return True

    def _finish(
        self,
        task: TaskRecord,
        status: TaskStatus,
        now: float,
        error_class: ErrorClass | None,
        message: str | None,
    ) -> None:
        check_task_transition(task.status, status)
        task.status = status
        task.end_time = now
        task.error_class = error_class
        task.error_message = message
        task.unschedulable_reason = None
        self._mark_task(task)
        # Finished tasks live on in the store only; memory holds open work.
        del self.tasks[task.task_id]
        self.ledger.forget(task.task_id)

    def _send_to_worker(self, worker_id: str, message: Message) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None and worker.connection_id is not None:
            self._out.send(worker.connection_id, message)

    def _mark_task(self, task: TaskRecord) -> None:
        self._out.task(task)

    def _mark_worker(self, worker: LiveWorker) -> None:
        worker.heartbeat_written_at = worker.record.last_heartbeat
        self._out.worker(worker.record)

    # ------------------------------------------------------------------ output

    def take_effects(self) -> Effects:
        """Hand over this turn's writes, sends, closes and replies (and forget them)."""
        return self._out.take()

    def has_pending_effects(self) -> bool:
        return bool(self._out)
