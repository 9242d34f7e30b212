"""Rebuilding the coordinator's books from its store when it starts on an existing file.

Callers: :class:`~testfleet.coordinator.state.CoordinatorState` calls
:func:`restore` once, when it is built with what
:meth:`~testfleet.store.contract.CoordinatorStore.load_state` returned. Open
tasks go back into the queue or back onto their attempts; every worker starts
disconnected (see :func:`restore`). The rows this changes (a worker now
disconnected, an assigned task requeued) are written with the first turn.
"""

from __future__ import annotations

from testfleet.coordinator.task_lifecycle import TaskLifecycle
from testfleet.domain.enums import TaskStatus
from testfleet.domain.records import RecoveredState, TaskRecord
from testfleet.domain.task_slices import requirements_of_slice


def restore(book: TaskLifecycle, recovered: RecoveredState, now: float) -> None:
    """Rebuild ``book`` (a fresh one) from what the store reloaded after a restart.

    Every worker starts disconnected with a fresh grace period: one that
    reconnects in time keeps the attempts it still runs; the rest are
    declared lost by the usual heartbeat expiry and their tasks requeued.
    """
    book.next_attempt_id = recovered.next_attempt_id
    book.ledger.next_seq = recovered.next_test_seq
    for record in book.registry.recover(recovered.workers, now):
        book.mark_worker_record(record)
    for stale in recovered.stale_attempts:
        book.close_stale_attempt(stale, now)
    attempts = {a.attempt_id: a for a in recovered.open_attempts}
    for task in sorted(recovered.open_tasks, key=lambda t: (t.queued_at, t.task_id)):
        book.tasks[task.task_id] = task
        if task.task_id in recovered.reported_tests:
            task.reported_tests = set(recovered.reported_tests[task.task_id])
        book.known_task_ids.add(task.task_id)
        if task.status is TaskStatus.QUEUED:
            _enqueue(book, task, now)
            continue
        attempt = attempts.get(task.current_attempt_id or -1)
        live = book.workers.get(attempt.worker_id) if attempt else None
        if attempt is None or live is None:
            # An assigned task without its attempt or worker cannot be resumed.
            task.status = TaskStatus.QUEUED
            task.current_attempt_id = None
            book.mark_task(task)
            _enqueue(book, task, now)
            continue
        book.open_attempts[attempt.attempt_id] = attempt
        requirements = requirements_of_slice(task.spec, attempt.slice_index)
        live.hold(attempt.attempt_id, requirements.resources.amounts())
        book.push_deadline(attempt, task)


def _enqueue(book: TaskLifecycle, task: TaskRecord, now: float) -> None:
    if task.not_before is not None and task.not_before > now:
        book.queue.push_delayed(task.task_id, task.not_before)
    else:
        book.queue.push(task.spec, task.queued_at, submitted_at=task.create_time, now=now)
        # Its slice may have expired while the coordinator was down.
        if task.spec.fallbacks and task.slice_index != book.queue.slice_of(task.task_id):
            task.slice_index = book.queue.slice_of(task.task_id)
            book.mark_task(task)
