"""Every allowed task status transition, in one place.

Callers: the coordinator's state machine calls :func:`check_task_transition`
before changing a task's status, so an impossible change (a completed task
starting again) fails loudly in tests instead of corrupting the store.
"""

from __future__ import annotations

from testfleet.domain.enums import TaskStatus

Q, A, R = TaskStatus.QUEUED, TaskStatus.ASSIGNED, TaskStatus.RUNNING
C, F, T, X = TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELLED

ALLOWED_TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # Placed on a worker, or cancelled while waiting.
    Q: frozenset({A, X}),
    # The worker accepted; or it refused / was lost (back to the queue); or the
    # result arrived before the accept was processed; or it timed out or was cancelled.
    A: frozenset({R, Q, C, F, T, X}),
    # Finished one way or another, or requeued for a retry or after a lost worker.
    R: frozenset({C, F, T, X, Q}),
    # Terminal states have no way out.
    C: frozenset(),
    F: frozenset(),
    T: frozenset(),
    X: frozenset(),
}


class InvalidTransitionError(RuntimeError):
    """A status change that the lifecycle does not allow: a bug, not bad input."""


def check_task_transition(old: TaskStatus, new: TaskStatus) -> None:
    """Raise :class:`InvalidTransitionError` unless ``old -> new`` is allowed."""
    if new not in ALLOWED_TASK_TRANSITIONS[old]:
        raise InvalidTransitionError(f"task cannot go from {old.value} to {new.value}")
