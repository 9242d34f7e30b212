"""Events: everything that can change coordinator state, as typed values.

Socket handlers, API handlers and the ticker turn what happened into one of
these and put it on the loop's queue (:mod:`testfleet.coordinator.loop`); only
the loop applies them, so state has one writer and needs no locks. An event
that expects an answer carries a :class:`Reply`, resolved only after the
changes it caused are committed (durable before acknowledged).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from testfleet.coordinator.worker_identity import WorkerCredential
from testfleet.domain.task import TaskSpec
from testfleet.protocol.messages import Hello, Message


class Reply(Protocol):
    """Where the answer to an event goes once it is durable (an asyncio future, in practice)."""

    def resolve(self, value: object) -> None: ...


@dataclass(frozen=True, slots=True)
class SubmitTasks:
    specs: list[TaskSpec]
    reply: Reply
    #: The API token that submitted them, kept on each task (None: no token, in tests).
    submitted_by: str | None = None


@dataclass(frozen=True, slots=True)
class CancelTasks:
    """Cancel every task in ``task_ids`` at once, answered with a :class:`CancelOutcome`.

    One event for the whole list, never one per task: the loop schedules only
    after applying a turn's events, so a slot that cancelling one running task
    frees can never be given to another task of the same request (which would
    start it, only to kill it a moment later).
    """

    task_ids: list[str]
    reply: Reply


@dataclass(frozen=True, slots=True)
class DrainWorker:
    worker_id: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class UndrainWorker:
    """Let a drained worker take new work again."""

    worker_id: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class RevokeWorker:
    """An admin revoked ``worker_id`` at ``revoked_at`` (already durable in the
    store): close its socket, requeue its attempts, refuse older credentials."""

    worker_id: str
    revoked_at: float
    reply: Reply


@dataclass(frozen=True, slots=True)
class WorkerConnected:
    """A socket sent a ``hello`` its credentials admit; the state answers with
    welcome or error (it checks ``credential`` against revocations once more: a
    revoke may have been applied since the endpoint looked)."""

    connection_id: int
    hello: Hello
    #: What vouched for the hello (None: unknown, as in tests that post hellos directly).
    credential: WorkerCredential | None = None


@dataclass(frozen=True, slots=True)
class WorkerFrame:
    """A decoded message from a registered connection."""

    connection_id: int
    message: Message
    #: When the socket handler read it (the loop's clock); the loop measures
    #: how long heartbeats waited to be applied from it (None: not timed).
    received_at: float | None = None


@dataclass(frozen=True, slots=True)
class WorkerDisconnected:
    connection_id: int


@dataclass(frozen=True, slots=True)
class Tick:
    """Periodic: expire heartbeats and deadlines, release delayed retries."""


@dataclass(frozen=True, slots=True)
class ShutdownRequested:
    """The coordinator received SIGTERM (posted by :meth:`CoordinatorLoop.begin_shutdown`):
    from now on nothing is scheduled and no worker is declared lost, since the
    workers' sockets are about to close for the restart, not because they died."""


Event = (
    ShutdownRequested
    | SubmitTasks
    | CancelTasks
    | DrainWorker
    | UndrainWorker
    | RevokeWorker
    | WorkerConnected
    | WorkerFrame
    | WorkerDisconnected
    | Tick
)


# Answers, passed to ``Reply.resolve`` once the change is committed.


@dataclass(frozen=True, slots=True)
class Accepted:
    """The request took effect; ``ids`` are the tasks or workers it concerned."""

    ids: list[str]


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """What a :class:`CancelTasks` request did to each task it named (each id in one list)."""

    cancelled: list[str]
    #: Tasks that had already finished (completed, failed, ...): nothing to cancel.
    already_finished: list[str]
    not_found: list[str]


@dataclass(frozen=True, slots=True)
class Refused:
    """The request was refused as a whole and changed nothing."""

    reason: RefusalReason
    message: str
    ids: list[str]


class RefusalReason(StrEnum):
    DUPLICATE_TASK_ID = "duplicate_task_id"
    NOT_FOUND = "not_found"
    #: The submission would take its submitter past ``max_queued_per_submitter``.
    QUOTA_EXCEEDED = "quota_exceeded"
