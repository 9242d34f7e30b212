"""Enumerations for task types, states, hardware kinds and error classes.

Every state and kind that crosses a module boundary is one of these enums,
never a bare string; their values are what the wire format and DuckDB hold.
"""

from __future__ import annotations

from enum import StrEnum


class TaskType(StrEnum):
    """What a task does; each type has its own config model and executor."""

    COMMAND = "command"
    SIMULATED = "simulated"
    TEST = "test"
    BENCHMARK = "benchmark"


class TaskStatus(StrEnum):
    """Where a task is in its lifecycle (see domain.transitions for the edges)."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_TASK_STATUSES


TERMINAL_TASK_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELLED}
)


class ShownStatus(StrEnum):
    """A task's status as people see it and list tasks by (the CLI's tables,
    ``testfleet tasks --status``, ``GET /api/v1/tasks?status=``): every
    :class:`TaskStatus`, plus ``unschedulable`` for a queued task that no
    connected worker can run (it has an ``unschedulable_reason``). Listing by
    ``queued`` still includes those tasks; ``unschedulable`` is the subset."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    UNSCHEDULABLE = "unschedulable"


class AttemptStatus(StrEnum):
    """The state of one try of a task (one row of task_execution_history).

    ``LOST`` means the worker stopped answering. A result that arrives for an
    attempt that is no longer current is kept in ``task_results`` with the
    disposition ``late`` (see :class:`ResultDisposition`), never counted as
    the task's outcome; the attempt's own status stays what closed it.
    """

    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def is_final(self) -> bool:
        return self not in (AttemptStatus.ASSIGNED, AttemptStatus.RUNNING)


class ResultStatus(StrEnum):
    """The outcome a worker reports for one attempt."""

    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class ErrorClass(StrEnum):
    """Why an attempt did not complete; the retry decision depends on it.

    A lost worker is an infrastructure fault and is retried regardless of the
    task's retry policy (up to a fleet-wide cap); a task that genuinely fails is
    retried only as its ``retry_policy`` allows.
    """

    TASK_FAILURE = "task_failure"
    INFRASTRUCTURE = "infrastructure"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    OUT_OF_MEMORY = "out_of_memory"
    #: Ended by the worker for passing a declared limit other than memory
    #: (work-directory disk, a file over the disk limit): the task's fault.
    RESOURCE_LIMIT = "resource_limit"
    CANCELLED = "cancelled"
    INVALID_CONFIG = "invalid_config"
    #: A task whose attempts lost their workers more than ``max_lost_attempts``
    #: times (a poison task: it kills, or hangs, every worker it lands on); it
    #: is failed rather than handed to the next worker.
    LOST_TOO_OFTEN = "lost_too_often"
    #: A benchmark backend's outputs differed from torch's on the same weights and
    #: inputs by more than the task's ``output_tolerance`` (issue 15): a fast wrong
    #: answer. Its figures are still reported.
    OUTPUT_MISMATCH = "output_mismatch"


class ResultDisposition(StrEnum):
    """What became of a result the coordinator received (``task_results.disposition``).

    Every result is kept; exactly one per finished task is its outcome.
    """

    #: The task's outcome: its final, current attempt's result.
    OUTCOME = "outcome"
    #: The attempt failed or timed out and the task was tried again (its retry
    #: policy allowed it, or the worker gave the attempt up).
    RETRIED = "retried"
    #: It arrived after its attempt was closed without it (the worker was
    #: declared lost, the task was cancelled or timed out): history only.
    LATE = "late"


class HardwareKind(StrEnum):
    """Kinds of compute a worker can offer and a task can require."""

    CPU = "cpu"
    CUDA = "cuda"
    ROCM = "rocm"
    MPS = "mps"
    OPENVINO = "openvino"
    WEBGPU = "webgpu"
    WEBNN = "webnn"
    QNN = "qnn"


class WorkerStatus(StrEnum):
    """A worker as the coordinator sees it."""

    CONNECTED = "connected"
    DRAINING = "draining"
    DISCONNECTED = "disconnected"
    LOST = "lost"
    LEFT = "left"
    #: An admin revoked it (``testfleet workers revoke``): its socket was closed and
    #: credentials issued before the revocation are refused.
    REVOKED = "revoked"


class Codec(StrEnum):
    """Worker-channel frame encodings: JSON text frames by default, MessagePack
    when both sides ask for it, Protocol Buffers (the ``.proto``'s ``Envelope``)
    over gRPC only: a WebSocket frame is text or bytes, and its endpoint never
    welcomes a worker with it (``worker_channel.carried_codecs``).
    protocol.messages re-exports it."""

    JSON = "json"
    MSGPACK = "msgpack"
    PROTOBUF = "protobuf"
