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

from testfleet.domain.task import TaskSpec
from testfleet.protocol.messages import Hello, Message


class Reply(Protocol):
    """Where the answer to an event goes once it is durable (an asyncio future, in practice)."""

    def resolve(self, value: object) -> None: ...


@dataclass(frozen=True, slots=True)
class SubmitTasks:
    specs: list[TaskSpec]
    reply: Reply


@dataclass(frozen=True, slots=True)
class CancelTask:
    task_id: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class DrainWorker:
    worker_id: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class WorkerConnected:
    """A socket sent a valid ``hello``; the state answers with welcome or error."""

    connection_id: int
    hello: Hello


@dataclass(frozen=True, slots=True)
class WorkerFrame:
    """A decoded message from a registered connection."""

    connection_id: int
    message: Message


@dataclass(frozen=True, slots=True)
class WorkerDisconnected:
    connection_id: int


@dataclass(frozen=True, slots=True)
class Tick:
    """Periodic: expire heartbeats and deadlines, release delayed retries."""


Event = (
    SubmitTasks
    | CancelTask
    | DrainWorker
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
class Refused:
    """The request was refused as a whole and changed nothing."""

    reason: RefusalReason
    message: str
    ids: list[str]


class RefusalReason(StrEnum):
    DUPLICATE_TASK_ID = "duplicate_task_id"
    NOT_FOUND = "not_found"
    ALREADY_FINISHED = "already_finished"
