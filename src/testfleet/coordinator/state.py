"""Coordinator state: tasks, attempts and workers, changed only by events.

Who calls it: :class:`testfleet.coordinator.loop.CoordinatorLoop`, the one
writer, calls :meth:`CoordinatorState.handle` for each event and
:meth:`CoordinatorState.schedule` once per turn, then
:meth:`CoordinatorState.take_effects` to get what must be committed, sent and
answered. Nothing here does I/O, awaits or reads a clock: ``now`` is passed in,
so unit tests drive it with a fake clock.

This module maps events onto moves: a submission, a cancel, a drain, a
worker's hello, frames and disconnect, a tick, and one scheduling round per
turn. The moves themselves, and the rules they keep (at-least-once execution,
exactly-once recording, retries), are
:class:`~testfleet.coordinator.task_lifecycle.TaskLifecycle`'s; rebuilding
from the store at start-up is :mod:`~testfleet.coordinator.recovery`'s. Rules
kept here (ARCHITECTURE.md):

- A worker whose socket closed keeps its attempts for the disconnect grace
  (a blip: the same process reconnects and carries on); one that is silent
  with its socket open, or not back since a coordinator restart, keeps them
  until the heartbeat timeout. Then it is lost and its attempts requeued.
- A worker id belongs to one process at a time (see
  :mod:`~testfleet.coordinator.workers`); a frame from a replaced or refused
  connection no longer counts.
- A cancel frees its slots only for the same turn's scheduling round, after
  every task of the request is cancelled.
"""

from __future__ import annotations

from testfleet.coordinator.events import (
    Accepted,
    CancelOutcome,
    CancelTasks,
    DrainWorker,
    Event,
    RefusalReason,
    Refused,
    Reply,
    RevokeWorker,
    ShutdownRequested,
    SubmitTasks,
    Tick,
    UndrainWorker,
    WorkerConnected,
    WorkerDisconnected,
    WorkerFrame,
)
from testfleet.coordinator.load_history import LoadHistory
from testfleet.coordinator.log_tails import LogTails
from testfleet.coordinator.recovery import restore
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.task_lifecycle import TaskLifecycle
from testfleet.coordinator.unschedulable import with_fallbacks
from testfleet.coordinator.worker_identity import WorkerCredential, revocation_refusal
from testfleet.coordinator.workers import OPEN_WORKER_STATUSES, LiveWorker, Refusal
from testfleet.domain.enums import AttemptStatus, ErrorClass, TaskStatus, WorkerStatus
from testfleet.domain.records import RecoveredState, TaskRecord
from testfleet.domain.task import TaskSpec
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Ack,
    Assign,
    Assignment,
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
from testfleet.scheduling.policies import policy_for
from testfleet.scheduling.scheduler import SchedulingPolicy
from testfleet.scheduling.view import SchedulingView

#: How often a worker's heartbeat time and load are written to ``worker_nodes``.
HEARTBEAT_WRITE_INTERVAL_SECONDS = 10.0


class CoordinatorState(TaskLifecycle):
    """All mutable coordinator state; see the module docstring for the rules."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        now: float,
        recovered: RecoveredState | None = None,
        known_task_ids: set[str] | None = None,
        revocations: dict[str, float] | None = None,
        policy: SchedulingPolicy | None = None,
    ) -> None:
        """``revocations``: the latest revocation time of each revoked worker id
        (``Store.worker_revocations``), so that a restart keeps refusing them.
        ``policy``: how queued tasks are placed each turn; by default the one
        ``settings.scheduling_policy`` names, the fleet simulator passes the
        policy it compares."""
        super().__init__(settings, known_task_ids)
        self.policy = policy or policy_for(settings.scheduling_policy)
        self.registry.revoked.update(revocations or {})
        self.started_at = now
        #: Rows of the file that recovery could not read and left out (reported
        #: in the log at start-up and by the stats API).
        self.unreadable_rows: list[str] = []
        self._topology_changed = True
        #: Set by :class:`ShutdownRequested`: schedule nothing, lose no worker.
        self.shutting_down = False
        #: Running attempts' live output (not durable; read by the log routes).
        self.log_tails = LogTails()
        #: Recent heartbeat loads per worker, for the workers page's sparklines.
        self.load_history = LoadHistory()
        if recovered is not None:
            self.unreadable_rows = list(recovered.unreadable_rows)
            restore(self, recovered, now)
        for task in self.tasks.values():
            self.quota.add(task.submitted_by)

    # ------------------------------------------------------------------ events

    def handle(self, event: Event, now: float) -> None:
        """Apply one event. Called by the loop, in arrival order."""
        match event:
            case SubmitTasks(specs=specs, reply=reply, submitted_by=submitted_by):
                self._submit(specs, reply, now, submitted_by)
            case CancelTasks(task_ids=task_ids, reply=reply):
                self._cancel(task_ids, reply, now)
            case DrainWorker(worker_id=worker_id, reply=reply):
                self._drain(worker_id, reply)
            case UndrainWorker(worker_id=worker_id, reply=reply):
                self._undrain(worker_id, reply)
            case RevokeWorker(worker_id=worker_id, revoked_at=revoked_at, reply=reply):
                self._revoke(worker_id, revoked_at, reply, now)
            case WorkerConnected(connection_id=connection_id, hello=hello, credential=credential):
                self._hello(connection_id, hello, now, credential)
            case WorkerFrame(connection_id=connection_id, message=message):
                self._frame(connection_id, message, now)
            case WorkerDisconnected(connection_id=connection_id):
                self._disconnected(connection_id, now)
            case Tick():
                self._tick(now)
            case ShutdownRequested():
                self.shutting_down = True

    def _submit(
        self, specs: list[TaskSpec], reply: Reply, now: float, submitted_by: str | None
    ) -> None:
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
        # Here, in the one writer, so that two submissions cannot both slip under it.
        over_quota = self.quota.refusal(submitted_by, len(specs))
        if over_quota is not None:
            self._out.reply(reply, Refused(RefusalReason.QUOTA_EXCEEDED, over_quota, []))
            return
        for spec in specs:
            task = TaskRecord(
                spec=spec,
                status=TaskStatus.QUEUED,
                create_time=now,
                queued_at=now,
                submitted_by=submitted_by,
            )
            self.tasks[spec.task_id] = task
            self.known_task_ids.add(spec.task_id)
            self.quota.add(submitted_by)
            key = self.queue.push(spec, now, work_key=task.work_key)
            task.unschedulable_reason = self.unschedulable.get(key)
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

    def _open_worker(self, worker_id: str, reply: Reply) -> LiveWorker | None:
        """The worker a drain or undrain names, or None after refusing the request:
        a worker that is unknown, lost or gone cannot be drained."""
        worker = self.workers.get(worker_id)
        if worker is None or worker.record.status not in OPEN_WORKER_STATUSES:
            self._out.reply(
                reply,
                Refused(RefusalReason.NOT_FOUND, f"no connected worker {worker_id!r}", [worker_id]),
            )
            return None
        return worker

    def _drain(self, worker_id: str, reply: Reply) -> None:
        worker = self._open_worker(worker_id, reply)
        if worker is None:
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
        worker = self._open_worker(worker_id, reply)
        if worker is None:
            return
        if worker.draining:
            worker.draining = False
            if worker.record.status is WorkerStatus.DRAINING:
                worker.record.status = WorkerStatus.CONNECTED
            self._mark_worker(worker)
            self._topology_changed = True
        self._out.reply(reply, Accepted([worker_id]))

    def _revoke(self, worker_id: str, revoked_at: float, reply: Reply, now: float) -> None:
        """Apply a revocation (durable already, see :class:`RevokeWorker`): the
        worker's socket is closed at once with the reason, and its open attempts
        are requeued as for a lost worker. Known or not, the id is refused from
        now on for credentials issued before ``revoked_at``."""
        worker, connection = self.registry.revoke(worker_id, revoked_at)
        if worker is not None:
            if connection is not None:
                self._out.close(
                    connection,
                    Error(
                        code=ProtocolErrorCode.UNAUTHORIZED,
                        message=f"worker {worker_id!r} was revoked by an admin "
                        "(`testfleet workers revoke`)",
                    ),
                )
            for attempt_id in sorted(worker.attempts):
                self._lose_attempt(
                    self.open_attempts[attempt_id], now, f"worker {worker_id!r} was revoked"
                )
            self._mark_worker(worker)
            self._topology_changed = True
        self._out.reply(reply, Accepted([worker_id]))

    # ----------------------------------------------------------- worker channel

    def _hello(
        self, connection_id: int, hello: Hello, now: float, credential: WorkerCredential | None
    ) -> None:
        revoked_at = self.registry.revoked.get(hello.worker_id)
        if revoked_at is not None:
            # The endpoint checked too, but a revoke may have been applied since.
            refusal = (
                revocation_refusal(credential, revoked_at)
                if credential is not None
                else Refusal(
                    ProtocolErrorCode.UNAUTHORIZED, f"worker {hello.worker_id!r} was revoked"
                )
            )
            if refusal is not None:
                self._refuse_connection(connection_id, refusal.code, refusal.message)
                return
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
                self.load_history.record(worker_id, now, load)
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
            case LogChunk(attempt_id=attempt_id, data=data):
                attempt = self.open_attempts.get(attempt_id)
                # Only the worker holding the attempt speaks for its output.
                if attempt is None or attempt.worker_id != worker_id:
                    self.log_tails.ignore()
                else:
                    self.log_tails.add(
                        attempt_id, attempt.task_id, worker_id, data, now, attempt=attempt.attempt
                    )
            case Bye():
                worker.leaving = True
            case _:
                self._refuse_connection(
                    connection_id,
                    ProtocolErrorCode.INVALID_MESSAGE,
                    f"a worker may not send '{message.type.value}' messages",
                )

    def _disconnected(self, connection_id: int, now: float) -> None:
        worker = self.registry.disconnect(connection_id, now)
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
                self._requeue(task, now)
                self.mark_task(task)
        self._advance_slices(now)
        # At shutdown the sockets close because this process is going, not the
        # workers: their attempts carry on and are claimed again after the restart.
        overdue = (
            []
            if self.shutting_down
            else self.registry.overdue(
                now, self.settings.heartbeat_timeout_seconds, self.settings.disconnect_grace_seconds
            )
        )
        for worker, why in overdue:
            self._lose_worker(worker, now, why)
        self._expire_deadlines(now)
        if not self.shutting_down:
            self._speculate(now)
        self.log_tails.sweep(self.open_attempts, now)

    def _lose_worker(self, worker: LiveWorker, now: float, why: str) -> None:
        connection = self.registry.mark_lost(worker)
        if connection is not None:
            self._out.close(connection, None)
        for attempt_id in sorted(worker.attempts):
            self._lose_attempt(
                self.open_attempts[attempt_id],
                now,
                f"worker {worker.record.worker_id!r} lost: {why}",
            )
        self._mark_worker(worker)
        self._topology_changed = True

    # --------------------------------------------------------------- scheduling

    def schedule(self, now: float) -> None:
        """Place queued tasks on free workers; refresh unschedulable reasons when
        the set of workers or of requirement keys changed. Called once per turn
        (never at shutdown: an assignment then would reach no worker)."""
        if self.shutting_down:
            return
        keys_changed = self.queue.take_keys_changed() or self._topology_changed
        self._topology_changed = False
        # An empty queue with the same keys and workers has nothing to decide:
        # return before building a view of every connected worker (O(workers),
        # most of a turn's time on a large fleet; see benchmarks/simulate.py).
        if not keys_changed and len(self.queue) == 0:
            return
        if not keys_changed and not self.registry.has_free_slot():
            return
        decisions = self.policy(
            SchedulingView(
                now=now,
                pending_by_priority=self.queue.pending_by_priority(),
                # Live views of the registry's (no copies of 10,000 views per
                # turn): the policy returns before anything here changes.
                workers=self.registry.live_views(),
                ranked_workers=self.registry.live_ranked(),
                pending_keys=self.queue.key_requirements() if keys_changed else {},
                aging_seconds=self.settings.aging_seconds,
                speed_factors=self.speeds.factors,
                typical_seconds=self.speeds.typical,
            )
        )
        assignments: dict[str, list[Assignment]] = {}
        for placement in decisions.placements:
            assignment = self._assign(placement.task_id, placement.worker_id, now)
            assignments.setdefault(placement.worker_id, []).append(assignment)
        for worker_id, batch in assignments.items():
            self._send_to_worker(worker_id, Assign(assignments=batch))
        if keys_changed:
            self._refresh_unschedulable(
                with_fallbacks(
                    decisions.unschedulable,
                    self.queue.later_slices,
                    self.queue.key_requirements(),
                    self.registry.live_views(),
                )
            )

    def _refresh_unschedulable(self, reasons: dict[str, str]) -> None:
        for key in self.unschedulable.update(reasons):
            for task_id in self.queue.task_ids_with_key(key):
                task = self.tasks[task_id]
                task.unschedulable_reason = self.unschedulable.get(key)
                self.mark_task(task)
