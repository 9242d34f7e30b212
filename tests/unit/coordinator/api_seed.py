"""A DuckDB file holding one of everything the REST API shows (imported by the API's tests).

:func:`seed_store` writes, through the real store, what a coordinator would
have recorded after a little work: a worker that was connected (it comes
back as ``disconnected``, so it can still be drained), queued, completed and
failed tasks with their attempts and results (a retried one and a counted
one), a pytest run's chunk with a recorded test, and benchmark rows. The
API's answers about them are then as rich as real ones: every optional part
of a response body is filled somewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testfleet.domain.benchmark import BenchmarkRow
from testfleet.domain.enums import (
    AttemptStatus,
    ErrorClass,
    HardwareKind,
    ResultDisposition,
    ResultStatus,
    TaskStatus,
    TaskType,
    WorkerStatus,
)
from testfleet.domain.hardware import GpuInfo, TorchInfo, WorkerCapabilities
from testfleet.domain.pytest_tasks import (
    PhaseReport,
    ReportOutcome,
    TestLocation,
    TestOutcome,
    TestPhase,
    TestRecord,
    TestResultRow,
)
from testfleet.domain.records import (
    AttemptRecord,
    ResultRecord,
    TaskRecord,
    WorkerRecord,
    WriteBatch,
)
from testfleet.domain.result import SimulationStatus, TaskError, TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.store import Store

#: 2024-05-01T12:00:00Z
T0 = 1_714_564_800.0
WORKER = "gpu-box-1"
QUEUED = "queued-1"
COMPLETED = "completed-1"
FAILED = "failed-1"
CHUNK = "chunk-1"
RUN = "run-1"
PROJECT = "path:/srv/project"
MODEL = "bert-base-uncased"


@dataclass(frozen=True)
class Seeded:
    """The ids the seeded file holds, for tests to ask about."""

    worker_id: str = WORKER
    queued_task: str = QUEUED
    completed_task: str = COMPLETED
    failed_task: str = FAILED
    run_id: str = RUN
    project: str = PROJECT
    model: str = MODEL


def _result(task_id: str, status: ResultStatus, error: TaskError | None = None) -> TaskResult:
    return TaskResult(
        task_id=task_id,
        worker_id=WORKER,
        status=status,
        execution_time_seconds=1.25,
        hardware_metrics={"cpu_percent": 12.5},
        results={"exit_code": 0 if error is None else 1, "output_tail": "ok\n"},
        simulation_status=SimulationStatus(is_simulated=False),
        logs="b2sK",
        error=error,
    )


def _bench(attempt_id: int, batch_size: int, at: float, **changes: object) -> BenchmarkRow:
    figures: dict[str, object] = {
        "attempt_id": attempt_id,
        "batch_size": batch_size,
        "task_id": f"bench-{attempt_id}",
        "worker_id": WORKER,
        "recorded_time": at,
        "model": MODEL,
        "variant": "seq=128",
        "hardware": "cuda",
        "device_name": "NVIDIA H200",
        "precision": "fp16",
        "is_simulated": False,
        "latency_ms": 10.0,
        "latency_p50_ms": 10.0,
        "latency_p90_ms": 11.0,
        "latency_p99_ms": 12.0,
        "throughput_items_per_second": 100.0 * batch_size,
        "memory_mb": 1024.0,
        "error_class": None,
        "error_message": None,
        "torch_version": "2.5.1",
        "transformers_version": "4.46.0",
        "load_note": None,
    }
    figures.update(changes)
    return BenchmarkRow(**figures)  # type: ignore[arg-type]


def _benchmark_batch(attempt_id: int, at: float, rows: list[BenchmarkRow]) -> WriteBatch:
    task_id = rows[0].task_id
    spec = TaskSpec(
        task_id=task_id,
        type=TaskType.BENCHMARK,
        requirements={"hardware": [HardwareKind.CUDA]},
        config={"model": MODEL, "batch_sizes": [row.batch_size for row in rows]},
    )
    return WriteBatch(
        tasks=[TaskRecord(spec, TaskStatus.COMPLETED, at, at, start_time=at, end_time=at + 5)],
        attempts=[
            AttemptRecord(attempt_id, task_id, WORKER, 1, AttemptStatus.COMPLETED, at, at, at + 5)
        ],
        results=[
            ResultRecord(
                attempt_id,
                task_id,
                WORKER,
                at + 5,
                ResultDisposition.OUTCOME,
                _result(task_id, ResultStatus.COMPLETED),
            )
        ],
        benchmark_rows=rows,
    )


def seed_store(path: Path) -> Seeded:
    """Write the records described in the module docstring into a new file at ``path``."""
    capabilities = WorkerCapabilities(
        hostname="gpu-box-1.lab",
        os="Linux",
        python_version="3.11.7",
        memory_gb=512.0,
        gpus=[GpuInfo(index=0, vendor="nvidia", name="NVIDIA H200", memory_gb=141.0)],
        torch=TorchInfo(version="2.5.1", cuda_available=True, device_names=["NVIDIA H200"]),
        hardware=[HardwareKind.CPU, HardwareKind.CUDA],
        task_types=list(TaskType),
        tags={"rack": "a"},
    )
    command = TaskSpec(
        task_id=COMPLETED,
        type=TaskType.COMMAND,
        priority=1,
        requirements={"hardware": [HardwareKind.CUDA], "tags": {"rack": "a"}},
        config={"argv": ["echo", "ok"], "env": {"MODE": "fast"}},
        retry_policy={"max_retries": 1, "retry_delay_seconds": 0.5},
    )
    failing = TaskSpec(task_id=FAILED, type=TaskType.COMMAND, config={"argv": ["false"]})
    queued = TaskSpec(task_id=QUEUED, type=TaskType.SIMULATED, config={"duration_seconds": 60})
    chunk = TaskSpec(
        task_id=CHUNK,
        type=TaskType.TEST,
        config={"run_id": RUN, "project": {"path": "/srv/project"}, "node_ids": ["t.py::a"]},
    )
    failure = TaskError(error_class=ErrorClass.TASK_FAILURE, message="exit code 1")
    record = TestRecord(
        nodeid="t.py::a",
        location=TestLocation(path="t.py", lineno=3, domain="a"),
        phases=[
            PhaseReport(when=TestPhase.SETUP, outcome=ReportOutcome.PASSED),
            PhaseReport(
                when=TestPhase.CALL,
                outcome=ReportOutcome.FAILED,
                duration=0.5,
                longrepr="E   assert 1 == 2",
                sections=[("Captured stdout call", "hi\n")],
            ),
            PhaseReport(when=TestPhase.TEARDOWN, outcome=ReportOutcome.PASSED),
        ],
    )
    with Store(path) as store:
        store.write(
            WriteBatch(
                workers=[
                    WorkerRecord(
                        WORKER,
                        "gpu-box-1.lab",
                        T0,
                        T0 + 30,
                        WorkerStatus.CONNECTED,
                        capabilities,
                        2,
                        {"cpu_percent": 3.0, "gpu_utilization": [0.0]},
                    )
                ],
                tasks=[
                    TaskRecord(queued, TaskStatus.QUEUED, T0, T0),
                    TaskRecord(
                        command,
                        TaskStatus.COMPLETED,
                        T0,
                        T0 + 10,
                        start_time=T0 + 10,
                        end_time=T0 + 12,
                        worker_id=WORKER,
                        attempts=2,
                    ),
                    TaskRecord(
                        failing,
                        TaskStatus.FAILED,
                        T0,
                        T0,
                        start_time=T0 + 1,
                        end_time=T0 + 2,
                        worker_id=WORKER,
                        attempts=1,
                        error_class=ErrorClass.TASK_FAILURE,
                        error_message="exit code 1",
                    ),
                    TaskRecord(
                        chunk,
                        TaskStatus.COMPLETED,
                        T0,
                        T0,
                        start_time=T0 + 1,
                        end_time=T0 + 3,
                        worker_id=WORKER,
                        attempts=1,
                    ),
                ],
                attempts=[
                    AttemptRecord(
                        1,
                        COMPLETED,
                        WORKER,
                        1,
                        AttemptStatus.FAILED,
                        T0 + 1,
                        T0 + 1,
                        T0 + 2,
                        1.0,
                        ErrorClass.TASK_FAILURE,
                        "exit code 1",
                        {"cpu_percent": 50.0},
                    ),
                    AttemptRecord(
                        2, COMPLETED, WORKER, 2, AttemptStatus.COMPLETED, T0 + 10, T0 + 10, T0 + 12
                    ),
                    AttemptRecord(
                        3,
                        FAILED,
                        WORKER,
                        1,
                        AttemptStatus.FAILED,
                        T0 + 1,
                        T0 + 1,
                        T0 + 2,
                        error_class=ErrorClass.TASK_FAILURE,
                        error_message="exit code 1",
                    ),
                    AttemptRecord(4, CHUNK, WORKER, 1, AttemptStatus.COMPLETED, T0 + 1),
                ],
                results=[
                    ResultRecord(
                        1,
                        COMPLETED,
                        WORKER,
                        T0 + 2,
                        ResultDisposition.RETRIED,
                        _result(COMPLETED, ResultStatus.FAILED, failure),
                    ),
                    ResultRecord(
                        2,
                        COMPLETED,
                        WORKER,
                        T0 + 12,
                        ResultDisposition.OUTCOME,
                        _result(COMPLETED, ResultStatus.COMPLETED),
                    ),
                    ResultRecord(
                        3,
                        FAILED,
                        WORKER,
                        T0 + 2,
                        ResultDisposition.OUTCOME,
                        _result(FAILED, ResultStatus.FAILED, failure),
                    ),
                ],
                test_rows=[
                    TestResultRow(
                        seq=1,
                        task_id=CHUNK,
                        nodeid="t.py::a",
                        attempt_id=4,
                        worker_id=WORKER,
                        run_id=RUN,
                        project=PROJECT,
                        rerun=0,
                        outcome=TestOutcome.FAILED,
                        duration_seconds=0.5,
                        crashed=False,
                        recorded_time=T0 + 2,
                        record=record,
                    )
                ],
            )
        )
        store.write(_benchmark_batch(10, T0, [_bench(10, 1, T0), _bench(10, 64, T0)]))
        store.write(
            _benchmark_batch(
                11,
                T0 + 3600,
                [
                    _bench(11, 1, T0 + 3600, throughput_items_per_second=125.0),
                    _bench(
                        11,
                        64,
                        T0 + 3600,
                        error_class="out_of_memory",
                        error_message="CUDA out of memory",
                        latency_ms=None,
                        latency_p50_ms=None,
                        latency_p90_ms=None,
                        latency_p99_ms=None,
                        throughput_items_per_second=None,
                        memory_mb=None,
                        load_note="busy: CPU 97 %",
                    ),
                ],
            )
        )
    return Seeded()
