"""Messages between coordinator and worker: a discriminated union on ``type``.

Both sides import this module and nothing else of each other. A message is a
frozen pydantic model; unknown fields are refused so that a mismatched peer is
noticed at once. Messages that carry work in bulk (assign, accept, result, ack,
cancel) take lists: one frame per scheduling round per worker, not per task.

Exchange (worker connects out)::

    worker -> hello      coordinator -> welcome | error+close
    worker -> heartbeat  (every heartbeat_interval_seconds, carries load)
    coordinator -> assign            worker -> accept | reject
    worker -> log                    (optional, while running; accepted and ignored
                                      until the dashboard streams log tails)
    worker -> tests                  (test tasks: each finished test, as it finishes)
    worker -> result                 coordinator -> ack (after it is durable)
    coordinator -> cancel | drain    either -> bye
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

# Codec lives with the other enums so the CLI can name it without importing
# every message model; it is part of this module's interface all the same.
from testfleet.domain.enums import Codec as Codec
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.json_values import INT64_MAX
from testfleet.domain.pytest_tasks import NodeId, TestRecord
from testfleet.domain.result import TaskResult
from testfleet.domain.task import TaskSpec

#: Bumped on any incompatible change; the coordinator refuses other versions.
PROTOCOL_VERSION = 1

WorkerId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")]
#: Attempt ids are issued by the coordinator from 1 up.
AttemptId = Annotated[int, Field(ge=1, le=INT64_MAX)]
AttemptIds = Annotated[list[AttemptId], Field(max_length=100_000)]
ProtocolVersion = Annotated[int, Field(ge=0, le=1_000_000)]


class MessageType(StrEnum):
    HELLO = "hello"
    WELCOME = "welcome"
    HEARTBEAT = "heartbeat"
    ASSIGN = "assign"
    ACCEPT = "accept"
    REJECT = "reject"
    LOG = "log"
    TESTS = "tests"
    RESULT = "result"
    ACK = "ack"
    CANCEL = "cancel"
    DRAIN = "drain"
    BYE = "bye"
    ERROR = "error"


class ProtocolErrorCode(StrEnum):
    MALFORMED_FRAME = "malformed_frame"
    UNKNOWN_MESSAGE = "unknown_message"
    INVALID_MESSAGE = "invalid_message"
    UNSUPPORTED_VERSION = "unsupported_version"
    WORKER_ID_IN_USE = "worker_id_in_use"
    NOT_REGISTERED = "not_registered"
    FRAME_TOO_LARGE = "frame_too_large"
    UNAUTHORIZED = "unauthorized"
    #: The worker sent frames faster than the coordinator's per-worker limit.
    TOO_MANY_FRAMES = "too_many_frames"
    #: The coordinator already has as many workers connected as it allows.
    TOO_MANY_WORKERS = "too_many_workers"


class _Message(BaseModel):
    # No inf or nan: they cannot be stored (see testfleet.domain.json_values).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class WorkerLoad(_Message):
    """A heartbeat's machine load. The GPU figures are None where the worker has
    no NVIDIA GPU it can read (and from workers older than them): optional with
    defaults, so an older worker's heartbeat still validates."""

    cpu_percent: float = Field(default=0.0, ge=0)
    memory_percent: float = Field(default=0.0, ge=0, le=100)
    load_average_1m: float | None = Field(default=None, ge=0)
    running: int = Field(default=0, ge=0, le=1_000_000)
    #: Mean utilisation of the worker's GPUs (NVML), percent.
    gpu_utilization_percent: float | None = Field(default=None, ge=0, le=100)
    #: GPU memory in use over all its GPUs, percent of their total.
    gpu_memory_percent: float | None = Field(default=None, ge=0, le=100)


class Hello(_Message):
    """First frame from a worker. ``session_key`` is random per worker process: a
    reconnect from the same process replaces its old connection, while another
    process claiming a connected worker's id is refused."""

    type: Literal[MessageType.HELLO] = MessageType.HELLO
    protocol_version: ProtocolVersion
    worker_id: WorkerId
    session_key: str = Field(min_length=16, max_length=128)
    capabilities: WorkerCapabilities
    slots: int = Field(ge=1, le=4096)
    running_attempts: AttemptIds = Field(default_factory=list)
    held_results: AttemptIds = Field(default_factory=list)
    codecs: list[Codec] = Field(default_factory=lambda: [Codec.JSON], min_length=1)


class Welcome(_Message):
    """The coordinator's reply to ``hello``: settings, and what to do with running work."""

    type: Literal[MessageType.WELCOME] = MessageType.WELCOME
    protocol_version: ProtocolVersion
    worker_id: WorkerId
    codec: Codec = Codec.JSON
    heartbeat_interval_seconds: float = Field(gt=0)
    heartbeat_timeout_seconds: float = Field(gt=0)
    keep_attempts: AttemptIds = Field(default_factory=list)
    cancel_attempts: AttemptIds = Field(default_factory=list)


class Heartbeat(_Message):
    type: Literal[MessageType.HEARTBEAT] = MessageType.HEARTBEAT
    load: WorkerLoad = Field(default_factory=WorkerLoad)
    running_attempts: AttemptIds = Field(default_factory=list)


class Assignment(_Message):
    """One lease: run ``task`` as attempt number ``attempt`` under id ``attempt_id``.

    ``completed_tests`` (test tasks only): node ids that earlier attempts of
    this task already reported (durably); the worker does not run them again.
    """

    attempt_id: AttemptId
    attempt: int = Field(ge=1, le=INT64_MAX)
    task: TaskSpec
    completed_tests: list[NodeId] = Field(default_factory=list, max_length=100_000)


class Assign(_Message):
    type: Literal[MessageType.ASSIGN] = MessageType.ASSIGN
    assignments: list[Assignment] = Field(min_length=1, max_length=100_000)


class Accept(_Message):
    type: Literal[MessageType.ACCEPT] = MessageType.ACCEPT
    attempt_ids: AttemptIds = Field(min_length=1)


class Reject(_Message):
    type: Literal[MessageType.REJECT] = MessageType.REJECT
    attempt_id: AttemptId
    reason: str = Field(max_length=4096)


class LogChunk(_Message):
    """A piece of a running attempt's output (live; the result carries the full log).

    Sent by the worker agent (``worker/log_stream.py``: at most a few chunks a
    second per attempt, each at most 16 KiB plus a skip marker); the
    coordinator keeps the chunks of an attempt open on the sending worker in
    a bounded tail (``coordinator/log_tails.py``) and ignores the rest.
    """

    type: Literal[MessageType.LOG] = MessageType.LOG
    attempt_id: AttemptId
    stream: Literal["stdout", "stderr"] = "stdout"
    data: str = Field(max_length=1024 * 1024)


class TestReports(_Message):
    """Tests of a running ``test`` attempt that have finished (all their phases).

    Sent while the chunk runs so that progress is live and a worker lost
    mid-chunk loses only its unfinished tests; the attempt's result lists the
    same records again (the coordinator stores each (attempt, test) once).
    """

    __test__ = False

    type: Literal[MessageType.TESTS] = MessageType.TESTS
    attempt_id: AttemptId
    records: list[TestRecord] = Field(min_length=1, max_length=10_000)


class AttemptResult(_Message):
    attempt_id: AttemptId
    started_at: float | None = None
    finished_at: float | None = None
    result: TaskResult


class Result(_Message):
    type: Literal[MessageType.RESULT] = MessageType.RESULT
    results: list[AttemptResult] = Field(min_length=1, max_length=100_000)


class Ack(_Message):
    """Results for these attempts are durable: the worker may forget them."""

    type: Literal[MessageType.ACK] = MessageType.ACK
    attempt_ids: AttemptIds = Field(min_length=1)


class Cancel(_Message):
    type: Literal[MessageType.CANCEL] = MessageType.CANCEL
    attempt_ids: AttemptIds = Field(min_length=1)
    reason: str = Field(default="", max_length=4096)


class Drain(_Message):
    """Finish running attempts, take no new ones."""

    type: Literal[MessageType.DRAIN] = MessageType.DRAIN
    reason: str = Field(default="", max_length=4096)


class Bye(_Message):
    type: Literal[MessageType.BYE] = MessageType.BYE
    reason: str = Field(default="", max_length=4096)


class Error(_Message):
    """A protocol error; the sender closes the socket after it."""

    type: Literal[MessageType.ERROR] = MessageType.ERROR
    code: ProtocolErrorCode
    message: str = Field(max_length=16384)


Message = Annotated[
    Hello
    | Welcome
    | Heartbeat
    | Assign
    | Accept
    | Reject
    | LogChunk
    | TestReports
    | Result
    | Ack
    | Cancel
    | Drain
    | Bye
    | Error,
    Field(discriminator="type"),
]

MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)
