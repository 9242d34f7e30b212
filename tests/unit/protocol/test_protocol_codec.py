"""Contract test: every message type round-trips through both codecs, and bad
frames become ProtocolErrors that name the problem."""

from __future__ import annotations

import typing

import msgpack
import orjson
import pytest

from testfleet.domain.enums import ErrorClass, ResultStatus
from testfleet.domain.hardware import CpuInfo, GpuInfo, WorkerCapabilities
from testfleet.domain.pytest_tasks import (
    PhaseReport,
    ReportOutcome,
    TestLocation,
    TestPhase,
    TestRecord,
)
from testfleet.domain.result import SimulationStatus, TaskError, TaskResult
from testfleet.domain.task import TaskSpec
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
        load=WorkerLoad(
            cpu_percent=12.5,
            memory_percent=40,
            running=1,
            gpu_utilization_percent=87.5,
            gpu_memory_percent=30.0,
        ),
        running_attempts=[3],
    ),
    Assign(assignments=[Assignment(attempt_id=5, attempt=2, task=TASK)]),
    Accept(attempt_ids=[5, 6]),
    Reject(attempt_id=5, reason="no executor"),
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


def _hello_document(**capabilities: object) -> dict[str, object]:
    document = Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id="w1",
        session_key="k" * 16,
        capabilities=CAPS,
        slots=1,
    ).model_dump(mode="json")
    document["capabilities"].update(capabilities)
    return document


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        # Issue 8: accepted, stored as null, and the file no longer opened.
        (_hello_document(memory_gb=float("inf")), "capabilities.memory_gb: inf is not a finite"),
        (_hello_document(memory_gb=float("nan")), "capabilities.memory_gb: nan is not a finite"),
        (_hello_document(memory_gb="inf"), "capabilities.memory_gb"),
        (_hello_document(tags={"rack": b"raw"}), "capabilities.tags.rack: a bytes"),
        (_hello_document(hostname="a\x00b"), None),  # NUL in a worker's text is only text
    ],
)
def test_msgpack_values_json_cannot_carry_are_refused_by_name(
    document: dict[str, object], fragment: str | None
) -> None:
    frame = msgpack.packb(document, use_bin_type=True)
    if fragment is None:
        assert isinstance(decode(frame), Hello)
        return
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.code is ProtocolErrorCode.INVALID_MESSAGE
    assert fragment in caught.value.message


def test_msgpack_maps_with_keys_that_are_not_strings_are_malformed() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb(_hello_document(tags={1: "a"})))
    assert caught.value.code is ProtocolErrorCode.MALFORMED_FRAME
    assert "map key" in caught.value.message


def test_a_result_with_an_infinite_time_is_refused() -> None:
    # Issue 8: it was stored, and GET /api/v1/tasks/ID answered 500 from then on.
    document = Result(results=[AttemptResult(attempt_id=1, result=RESULT)]).model_dump(mode="json")
    document["results"][0]["result"]["execution_time_seconds"] = float("inf")
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb(document))
    assert "results.0.result.execution_time_seconds: inf is not a finite" in caught.value.message


@pytest.mark.parametrize("value", ["99999999999999999999999", 1e30, 2**64 - 1])
def test_integers_past_64_bits_never_reach_a_model(value: object) -> None:
    frame = msgpack.packb({"type": "heartbeat", "load": {"running": value}})
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert "load.running" in caught.value.message


@pytest.mark.parametrize("kind", [[], {}, 1.5, None, "x" * 16_384])
def test_a_type_that_is_not_a_known_name_gets_an_error_that_can_be_sent(kind: object) -> None:
    # Issue 8: a list raised TypeError, a 16 KB string broke the error frame.
    with pytest.raises(ProtocolError) as caught:
        decode(orjson.dumps({"type": kind}).decode())
    assert caught.value.code is ProtocolErrorCode.UNKNOWN_MESSAGE
    assert len(caught.value.message) < 500
    encode(Error(code=caught.value.code, message=caught.value.message))


def test_a_refusal_quoting_huge_fields_still_fits_an_error_frame() -> None:
    document = {"type": "ack", "attempt_ids": [1], **{"k" * 10_000 + str(n): 1 for n in range(9)}}
    with pytest.raises(ProtocolError) as caught:
        decode(orjson.dumps(document).decode())
    encode(Error(code=caught.value.code, message=caught.value.message))


def test_json_nested_deeper_than_the_store_can_write_is_refused() -> None:
    # orjson reads 1,024 levels but writes 254: such a result could never be stored.
    nested = "[" * 300 + "]" * 300
    frame = (
        '{"type": "result", "results": [{"attempt_id": 1, "result": {"task_id": "t", '
        '"worker_id": "w", "status": "completed", "execution_time_seconds": 1, '
        f'"results": {{"deep": {nested}}}, "simulation_status": {{"is_simulated": false}}}}}}]}}'
    )
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.code is ProtocolErrorCode.INVALID_MESSAGE
    assert "Recursion limit" in caught.value.message


def test_a_heartbeat_without_gpu_figures_still_validates() -> None:
    # A worker older than the GPU figures sends only these keys.
    frame = '{"type": "heartbeat", "load": {"cpu_percent": 5, "memory_percent": 10, "running": 0}}'
    message = decode(frame)
    assert isinstance(message, Heartbeat)
    assert message.load.gpu_utilization_percent is None
    assert message.load.gpu_memory_percent is None


@pytest.mark.parametrize("field", ["gpu_utilization_percent", "gpu_memory_percent"])
@pytest.mark.parametrize("value", ["101", "-1", '"high"'])
def test_gpu_figures_out_of_bounds_are_refused_by_name(field: str, value: str) -> None:
    frame = f'{{"type": "heartbeat", "load": {{"{field}": {value}}}}}'
    with pytest.raises(ProtocolError) as refused:
        decode(frame)
    assert field in str(refused.value)
