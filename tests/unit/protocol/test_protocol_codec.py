"""Contract test: every message type round-trips through both codecs, and bad
frames become ProtocolErrors that name the problem."""

from __future__ import annotations

import typing

import msgpack
import pytest

from testfleet.domain.enums import ErrorClass, ResultStatus
from testfleet.domain.hardware import CpuInfo, GpuInfo, WorkerCapabilities
from testfleet.domain.result import SimulationStatus, TaskError, TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.domain.testing import (
    PhaseReport,
    ReportOutcome,
    TestLocation,
    TestPhase,
    TestRecord,
)
from testfleet.protocol.codec import MAX_FRAME_BYTES, ProtocolError, decode, encode
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Ack,
    Assign,
    Assignment,
    AttemptResult,
    Bye,
    Cancel,
    Codec,
    Drain,
    Error,
    Heartbeat,
    Hello,
    LogChunk,
    Message,
    MessageType,
    Progress,
    ProtocolErrorCode,
    Reject,
    Result,
    TestReports,
    Welcome,
    WorkerLoad,
)

TASK = TaskSpec.model_validate(
    {
        "task_id": "benchmark-bert-cuda-001",
        "type": "command",
        "priority": 1,
        "requirements": {"hardware": ["cuda"], "min_memory_gb": 8, "min_cuda_compute": 7.5},
        "config": {"argv": ["echo", "hi"], "env": {"A": "1"}},
        "timeout_seconds": 1800,
        "retry_policy": {"max_retries": 3, "retry_delay_seconds": 60},
    }
)
RESULT = TaskResult(
    task_id=TASK.task_id,
    worker_id="worker-gpu-001",
    status=ResultStatus.FAILED,
    execution_time_seconds=320,
    hardware_metrics={"gpu_utilization_percent": 95},
    results={"batch_sizes": {"1": {"latency_ms": 12.5}}},
    simulation_status=SimulationStatus(is_simulated=False),
    logs="aGk=",
    error=TaskError(error_class=ErrorClass.TASK_FAILURE, message="exit code 1"),
)
CAPS = WorkerCapabilities(
    hostname="gpu-box",
    os="Linux",
    python_version="3.12.1",
    cpu=CpuInfo(model="EPYC", logical_cores=64, physical_cores=32),
    memory_gb=512,
    gpus=[GpuInfo(index=0, vendor="nvidia", name="H200", memory_gb=141, compute_capability=9.0)],
)

EXAMPLES: list[Message] = [
    Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id="worker-gpu-001",
        session_key="k" * 32,
        capabilities=CAPS,
        slots=4,
        running_attempts=[3],
        held_results=[2],
        codecs=[Codec.MSGPACK, Codec.JSON],
    ),
    Welcome(
        protocol_version=PROTOCOL_VERSION,
        worker_id="worker-gpu-001",
        codec=Codec.MSGPACK,
        heartbeat_interval_seconds=2,
        heartbeat_timeout_seconds=15,
        keep_attempts=[3],
        cancel_attempts=[4],
    ),
    Heartbeat(
        load=WorkerLoad(cpu_percent=12.5, memory_percent=40, running=1), running_attempts=[3]
    ),
    Assign(assignments=[Assignment(attempt_id=5, attempt=2, task=TASK)]),
    Accept(attempt_ids=[5, 6]),
    Reject(attempt_id=5, reason="no executor"),
    Progress(attempt_id=5, message="batch 4", fraction=0.5),
    LogChunk(attempt_id=5, stream="stderr", data="warning\n"),
    TestReports(
        attempt_id=5,
        records=[
            TestRecord(
                nodeid="tests/test_a.py::test_one[x-1]",
                location=TestLocation(path="tests/test_a.py", lineno=3, domain="test_one[x-1]"),
                keywords=["test_one", "parametrize"],
                phases=[
                    PhaseReport(when=TestPhase.SETUP, outcome=ReportOutcome.PASSED, duration=0.001),
                    PhaseReport(
                        when=TestPhase.CALL,
                        outcome=ReportOutcome.FAILED,
                        duration=0.25,
                        longrepr="assert 1 == 2",
                        sections=[("Captured stdout call", "hello\n")],
                    ),
                    PhaseReport(when=TestPhase.TEARDOWN, outcome=ReportOutcome.PASSED),
                ],
            )
        ],
    ),
    Result(results=[AttemptResult(attempt_id=5, started_at=1.5, finished_at=2.5, result=RESULT)]),
    Ack(attempt_ids=[5]),
    Cancel(attempt_ids=[5], reason="cancelled"),
    Drain(reason="maintenance"),
    Bye(reason="stopping"),
    Error(code=ProtocolErrorCode.WORKER_ID_IN_USE, message="taken"),
]


def test_examples_cover_every_message_type() -> None:
    assert {m.type for m in EXAMPLES} == set(MessageType)
    union_members = typing.get_args(typing.get_args(Message)[0])
    assert len(union_members) == len(MessageType)


@pytest.mark.parametrize("codec", list(Codec))
@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.type.value)
def test_round_trip(message: Message, codec: Codec) -> None:
    frame = encode(message, codec)
    assert isinstance(frame, str if codec is Codec.JSON else bytes)
    assert decode(frame) == message


def test_task_document_survives_unchanged() -> None:
    decoded = decode(encode(EXAMPLES[3]))
    assert isinstance(decoded, Assign)
    assert decoded.assignments[0].task.model_dump(mode="json") == TASK.model_dump(mode="json")


@pytest.mark.parametrize(
    ("frame", "code", "fragment"),
    [
        ("{not json", ProtocolErrorCode.MALFORMED_FRAME, "not valid JSON"),
        (b"\xc1", ProtocolErrorCode.MALFORMED_FRAME, "MessagePack"),
        ("[1, 2]", ProtocolErrorCode.MALFORMED_FRAME, "got list"),
        ('{"type": "teleport"}', ProtocolErrorCode.UNKNOWN_MESSAGE, "teleport"),
        ('{"no_type": 1}', ProtocolErrorCode.UNKNOWN_MESSAGE, "None"),
        ('{"type": "accept", "attempt_ids": []}', ProtocolErrorCode.INVALID_MESSAGE, "attempt_ids"),
        (
            '{"type": "ack", "attempt_ids": [1], "extra": 1}',
            ProtocolErrorCode.INVALID_MESSAGE,
            "extra",
        ),
        (
            '{"type": "heartbeat", "load": {"cpu_percent": -1}}',
            ProtocolErrorCode.INVALID_MESSAGE,
            "load.cpu_percent",
        ),
    ],
)
def test_bad_frames_are_named(frame: str | bytes, code: ProtocolErrorCode, fragment: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.code is code
    assert fragment in caught.value.message


def test_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(b"\x00" * (MAX_FRAME_BYTES + 1))
    assert caught.value.code is ProtocolErrorCode.FRAME_TOO_LARGE


def test_msgpack_frame_with_wrong_shape() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb({"type": "welcome"}))
    assert caught.value.code is ProtocolErrorCode.INVALID_MESSAGE
