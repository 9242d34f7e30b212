"""Every record type reads back equal to what was written, in memory and in a file.

Also checks what lands in the design document's columns: real TIMESTAMPs in
UTC, enum values as their strings, JSON documents.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import duckdb
import orjson
import pytest
from store_builders import T0, attempt, capabilities, spec, task, worker

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
from testfleet.domain.hardware import CpuInfo, GpuInfo, TorchInfo
from testfleet.domain.records import ResultRecord, TaskRecord, WorkerRecord, WriteBatch
from testfleet.domain.result import SimulationStatus, TaskError, TaskResult, encode_logs
from testfleet.domain.task import Requirements, RetryPolicy
from testfleet.store import Store, open_store
from testfleet.store.postgres import PostgresStore


@pytest.fixture(params=["memory", "file", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store | PostgresStore]:
    if request.param == "postgres":
        path: str | Path = request.getfixturevalue("pg_dsn")
    else:
        path = ":memory:" if request.param == "memory" else tmp_path / "fleet.duckdb"
    with open_store(path) as opened:
        yield opened


def full_worker() -> WorkerRecord:
    return worker(
        "gpu-7",
        hostname="gpu-7.lab",
        registration_time=T0 + 0.123456,
        last_heartbeat=T0 + 60.000001,
        status=WorkerStatus.DRAINING,
        slots=4,
        hardware_metrics={"cpu_percent": 12.5, "gpus": [{"util": 0.9}], "ok": True},
        capabilities=capabilities(
            "gpu-7.lab",
            cpu=CpuInfo(model="EPYC", architecture="x86_64", logical_cores=64, physical_cores=32),
            memory_gb=512.0,
            gpus=[
                GpuInfo(
                    index=0,
                    vendor="nvidia",
                    name="H200",
                    memory_gb=141.0,
                    compute_capability=9.0,
                    driver_version="560.1",
                    uuid="GPU-1",
                )
            ],
            torch=TorchInfo(version="2.4.0", cuda_available=True, device_names=["H200"]),
            hardware=[HardwareKind.CPU, HardwareKind.CUDA],
            task_types=[TaskType.COMMAND, TaskType.SIMULATED],
            tags={"rack": "b2", "pool": "gpu"},
            probe_errors=["rocm: no driver"],
        ),
    )


def full_task() -> TaskRecord:
    return task(
        "suite.run-1",
        TaskStatus.FAILED,
        spec=spec(
            "suite.run-1",
            type=TaskType.COMMAND,
            priority=2,
            config={"argv": ["pytest", "-x", "tests/ü"], "env": {"SEED": "1"}, "cwd": "/src"},
            requirements=Requirements(
                hardware=[HardwareKind.CUDA, HardwareKind.ROCM],
                min_memory_gb=16.0,
                min_cuda_compute=8.0,
                min_gpu_memory_gb=40.5,
                gpu_model="H200",
                tags={"pool": "gpu"},
            ),
            timeout_seconds=90.25,
            retry_policy=RetryPolicy(max_retries=3, retry_delay_seconds=2.5),
        ),
        create_time=T0 + 0.5,
        queued_at=T0 + 10.000002,
        start_time=T0 + 11.75,
        end_time=T0 + 20.999999,
        worker_id="gpu-7",
        attempts=3,
        current_attempt_id=12,
        not_before=T0 + 30.0,
        lost_attempts=1,
        error_class=ErrorClass.OUT_OF_MEMORY,
        error_message="CUDA out of memory (tried to allocate 2 GiB)",
        unschedulable_reason="no worker has min_gpu_memory_gb >= 40.5",
    )


def full_result() -> ResultRecord:
    return ResultRecord(
        attempt_id=12,
        task_id="suite.run-1",
        worker_id="gpu-7",
        received_time=T0 + 21.123456,
        disposition=ResultDisposition.RETRIED,
        result=TaskResult(
            task_id="suite.run-1",
            worker_id="gpu-7",
            status=ResultStatus.FAILED,
            execution_time_seconds=9.123456789,
            hardware_metrics={"peak_memory_gb": 39.9},
            results={"tests": {"passed": 10, "failed": 1}, "latency_ms": [1.5, 2.25]},
            simulation_status=SimulationStatus(is_simulated=False, reason="real"),
            logs=encode_logs(b"line 1\nline 2\n"),
            error=TaskError(error_class=ErrorClass.OUT_OF_MEMORY, message="OOM"),
        ),
    )


def test_a_fully_populated_batch_reads_back_equal(store: Store) -> None:
    gpu_worker = full_worker()
    stored_task = full_task()
    stored_attempt = attempt(
        12,
        "suite.run-1",
        "gpu-7",
        AttemptStatus.FAILED,
        attempt=3,
        start_time=T0 + 11.5,
        accepted_time=T0 + 11.75,
        end_time=T0 + 20.999999,
        execution_time_seconds=9.123456789,
        error_class=ErrorClass.OUT_OF_MEMORY,
        error_message="OOM",
        hardware_metrics={"gpu_memory_gb": [39.9, 40.1]},
    )
    stored_result = full_result()

    store.write(
        WriteBatch(
            tasks=[stored_task],
            attempts=[stored_attempt],
            results=[stored_result],
            workers=[gpu_worker],
        )
    )

    assert store.list_workers() == [gpu_worker]
    assert store.get_task("suite.run-1") == stored_task
    assert store.get_attempts("suite.run-1") == [stored_attempt]
    assert store.get_results("suite.run-1") == [stored_result]


def test_records_with_every_optional_field_empty_read_back_equal(store: Store) -> None:
    bare_task = task("t1")
    bare_attempt = attempt(1, "t1")
    store.write(WriteBatch(workers=[worker()], tasks=[bare_task], attempts=[bare_attempt]))

    stored = store.get_task("t1")
    assert stored == bare_task
    assert stored is not None
    assert (stored.start_time, stored.end_time, stored.worker_id) == (None, None, None)
    assert (stored.current_attempt_id, stored.not_before, stored.error_class) == (None,) * 3
    assert store.get_attempts("t1") == [bare_attempt]
    assert store.get_attempts("t1")[0].hardware_metrics == {}
    assert store.get_results("t1") == []
    assert store.get_counted_result("t1") is None


def test_times_finer_than_a_microsecond_are_rounded_to_the_nearest_one(store: Store) -> None:
    fine = 1_712_345_678.123456789
    store.write(WriteBatch(tasks=[task("t1", create_time=fine)]))

    stored = store.get_task("t1")
    assert stored is not None
    assert stored.create_time == pytest.approx(fine, abs=1e-6)
    assert stored.create_time == 1_712_345_678.123457


def test_every_enum_value_round_trips(store: Store) -> None:
    for status in WorkerStatus:
        store.write(WriteBatch(workers=[worker("w1", status=status)]))
        assert [w.status for w in store.list_workers()] == [status]
    statuses = list(TaskStatus)
    errors = list(ErrorClass)
    tasks = [
        task(f"t{i}", statuses[i % len(statuses)], error_class=error)
        for i, error in enumerate(errors)
    ]
    attempt_statuses = list(AttemptStatus)
    attempts = [
        attempt(i + 1, "t0", status=attempt_statuses[i % len(attempt_statuses)], error_class=error)
        for i, error in enumerate(errors)
    ]
    store.write(WriteBatch(tasks=tasks, attempts=attempts))

    assert {t.task_id: t for t in store.list_tasks()} == {t.task_id: t for t in tasks}
    assert store.get_attempts("t0") == attempts
    assert {a.status for a in attempts} == set(AttemptStatus)
    assert {t.status for t in tasks} == set(TaskStatus)


def test_the_design_documents_columns_hold_sensible_values(tmp_path: Path) -> None:
    path = tmp_path / "fleet.duckdb"
    with Store(path) as store:
        store.write(
            WriteBatch(
                workers=[full_worker()],
                tasks=[full_task()],
                results=[full_result()],
            )
        )

    with duckdb.connect(str(path), read_only=True) as raw:
        row = raw.execute(
            "SELECT type, priority, status, create_time, worker_id, attempts, "
            "requirements, config FROM distributed_tasks"
        ).fetchone()
        worker_row = raw.execute(
            "SELECT registration_time, status, tags, capabilities->>'$.hostname' FROM worker_nodes"
        ).fetchone()
        result_row = raw.execute(
            "SELECT status, counted, is_simulated, execution_time_seconds, "
            "result->>'$.results.tests.failed' FROM task_results"
        ).fetchone()
    assert row is not None
    assert row[:3] == ("command", 2, "failed")
    # A naive TIMESTAMP holding UTC wall time.
    assert row[3] == dt.datetime(2023, 11, 14, 22, 13, 20, 500000)
    assert row[4:6] == ("gpu-7", 3)
    assert orjson.loads(row[6])["hardware"] == ["cuda", "rocm"]
    assert orjson.loads(row[7])["argv"] == ["pytest", "-x", "tests/ü"]
    assert worker_row == (
        dt.datetime(2023, 11, 14, 22, 13, 20, 123456),
        "draining",
        '{"rack":"b2","pool":"gpu"}',
        "gpu-7.lab",
    )
    assert result_row == ("failed", False, False, 9.123456789, "1")
