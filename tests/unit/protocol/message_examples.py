"""Examples of every worker-channel message, for the codec contract tests.

``RICH``: one of each message type with every optional field set (to a value
that differs from its default where one exists, and to a zero where None and
zero must stay apart), every list non-empty, attempt ids at ``INT64_MAX``,
and text outside ASCII. ``MINIMAL``: one of each with only what is required,
so that defaults and absent fields survive too. Imported by
``test_protocol_protobuf.py`` and ``test_protocol_protobuf_fuzz.py``.
"""

from __future__ import annotations

import typing

from pydantic import BaseModel

from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.json_values import INT64_MAX
from testfleet.domain.pytest_tasks import TestRecord
from testfleet.domain.result import TaskResult
from testfleet.domain.task import TaskSpec
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
    ProtocolErrorCode,
    Reject,
    Result,
    TestReports,
    Welcome,
    WorkerLoad,
)

#: Every class of the ``Message`` union.
MESSAGE_CLASSES: frozenset[type[BaseModel]] = frozenset(
    typing.get_args(typing.get_args(Message)[0])
)

CAPABILITIES = WorkerCapabilities.model_validate(
    {
        "hostname": "gpu-Łódź-01",
        "os": "Linux",
        "python_version": "3.11.9",
        "cpu": {"model": "EPYC™ 9654", "architecture": "x86_64", "logical_cores": 192},
        "memory_gb": 1536.5,
        "gpus": [
            {
                "index": 0,
                "vendor": "nvidia",
                "name": "H200",
                "memory_gb": 141.0,
                "compute_capability": 9.0,
                "uuid": "GPU-ü",
            }
        ],
        "hardware": ["cpu", "cuda"],
        "task_types": ["command", "test", "benchmark"],
        "tags": {"rack": "東京-3", "empty": ""},
    }
)
TASK = TaskSpec.model_validate(
    {
        "task_id": "bench-beta-001",
        "type": "command",
        "priority": 1000,
        "requirements": {"hardware": ["cuda"], "min_memory_gb": 8, "min_cuda_compute": 7.5},
        "config": {"argv": ["echo", "héllo ✓"], "env": {"LANG": "C.UTF-8"}},
        "timeout_seconds": 1800.5,
        "retry_policy": {"max_retries": 3, "retry_delay_seconds": 60},
        "idempotent": False,
        "expected_seconds": 12.25,
    }
)
MINIMAL_TASK = TaskSpec.model_validate({"task_id": "t", "type": "simulated"})
RECORD = TestRecord.model_validate(
    {
        "nodeid": "tests/test_ü.py::test_one[π-1]",
        "location": {"path": "tests/test_ü.py", "lineno": 3, "domain": "test_one[π-1]"},
        "keywords": ["test_one", "parametrize"],
        "phases": [
            {"when": "setup", "outcome": "passed", "duration": 0.001},
            {
                "when": "call",
                "outcome": "failed",
                "duration": 0.25,
                "longrepr": "assert 'ä' == 'a'",
                "sections": [["Captured stdout call", "héllo\n"]],
            },
            {"when": "teardown", "outcome": "passed"},
        ],
        "crashed": False,
    }
)
MINIMAL_RECORD = TestRecord.model_validate(
    {
        "nodeid": "t.py::t",
        "location": {"path": "t.py", "lineno": 0, "domain": "t"},
        "phases": [{"when": "setup", "outcome": "skipped"}],
    }
)
RESULT = TaskResult.model_validate(
    {
        "task_id": TASK.task_id,
        "worker_id": "worker-gpu-001",
        "status": "failed",
        "execution_time_seconds": 320.125,
        "hardware_metrics": {"gpu_utilization_percent": 95, "names": ["é", None, True]},
        "results": {"batch_sizes": {"1": {"latency_ms": 12.5, "max": INT64_MAX}}},
        "simulation_status": {"is_simulated": False},
        "logs": "aGk=",
        "error": {"error_class": "task_failure", "message": "exit code 1: ошибка"},
    }
)
MINIMAL_RESULT = TaskResult.model_validate(
    {
        "task_id": "t",
        "worker_id": "w",
        "status": "completed",
        "execution_time_seconds": 0,
        "simulation_status": {"is_simulated": True},
    }
)

RICH: list[Message] = [
    Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id="worker-gpu-001.lab:a@b",
        session_key="ключ-сессии-🔑-0123456789",
        capabilities=CAPABILITIES,
        slots=4096,
        running_attempts=[1, INT64_MAX],
        held_results=[INT64_MAX],
        codecs=[Codec.MSGPACK, Codec.JSON],
    ),
    Welcome(
        protocol_version=PROTOCOL_VERSION,
        worker_id="worker-gpu-001",
        codec=Codec.MSGPACK,
        heartbeat_interval_seconds=0.5,
        heartbeat_timeout_seconds=15.25,
        keep_attempts=[INT64_MAX],
        cancel_attempts=[1, 2],
    ),
    Heartbeat(
        load=WorkerLoad(
            cpu_percent=1234.5,
            memory_percent=100.0,
            load_average_1m=1.25,
            running=1_000_000,
            # Zero, not None: the worker read its GPUs and they are idle.
            gpu_utilization_percent=0.0,
            gpu_memory_percent=99.5,
        ),
        running_attempts=[INT64_MAX],
    ),
    Assign(
        assignments=[
            Assignment(
                attempt_id=INT64_MAX,
                attempt=INT64_MAX,
                task=TASK,
                completed_tests=["tests/test_ü.py::test_one[π-1]", "t.py::t"],
            ),
            Assignment(attempt_id=1, attempt=1, task=MINIMAL_TASK, completed_tests=["t.py::t"]),
        ]
    ),
    Accept(attempt_ids=[1, INT64_MAX]),
    Reject(attempt_id=INT64_MAX, reason="kein Executor für „command“"),
    LogChunk(attempt_id=INT64_MAX, stream="stderr", data="ошибка\n\ttab\x00nul 🚀"),
    TestReports(attempt_id=INT64_MAX, records=[RECORD, MINIMAL_RECORD]),
    Result(
        results=[
            # Zero, not None: a start at the epoch is still a start.
            AttemptResult(attempt_id=INT64_MAX, started_at=0.0, finished_at=1.7e9, result=RESULT),
            AttemptResult(attempt_id=1, started_at=2.5, finished_at=3.5, result=MINIMAL_RESULT),
        ]
    ),
    Ack(attempt_ids=[INT64_MAX, 1]),
    Cancel(attempt_ids=[INT64_MAX], reason="annulé par l\u2019administrateur"),
    Drain(reason="maintenance 🛠"),
    Bye(reason="au revoir"),
    Error(code=ProtocolErrorCode.TOO_MANY_WORKERS, message="trop de workers: 1 001 > 1 000"),
]

MINIMAL: list[Message] = [
    Hello(
        protocol_version=0,
        worker_id="w",
        session_key="k" * 16,
        capabilities=WorkerCapabilities(hostname="h", os="Linux", python_version="3.11"),
        slots=1,
    ),
    Welcome(
        protocol_version=PROTOCOL_VERSION,
        worker_id="w",
        heartbeat_interval_seconds=1,
        heartbeat_timeout_seconds=1,
    ),
    Heartbeat(),
    Assign(assignments=[Assignment(attempt_id=1, attempt=1, task=MINIMAL_TASK)]),
    Accept(attempt_ids=[1]),
    Reject(attempt_id=1, reason=""),
    LogChunk(attempt_id=1, data=""),
    TestReports(attempt_id=1, records=[MINIMAL_RECORD]),
    Result(results=[AttemptResult(attempt_id=1, result=MINIMAL_RESULT)]),
    Ack(attempt_ids=[1]),
    Cancel(attempt_ids=[1]),
    Drain(),
    Bye(),
    Error(code=ProtocolErrorCode.MALFORMED_FRAME, message=""),
]
