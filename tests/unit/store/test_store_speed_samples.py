"""The history a coordinator seeds its worker speeds with (store/speed_queries.py),
on both stores: completed outcomes by work key, passed tests by node, oldest first;
late, failed and crashed work left out; each worker's hardware class from its row."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient
from store_builders import T0, capabilities, result, spec, task, task_result, worker
from test_store_test_results import chunk_task, row

from testfleet.coordinator.app import create_app
from testfleet.domain.enums import HardwareKind, ResultStatus, TaskType
from testfleet.domain.pytest_tasks import TestOutcome
from testfleet.domain.records import WriteBatch
from testfleet.domain.work_keys import SpeedSample, node_work_key, work_key
from testfleet.security.tokens import Role
from testfleet.store import Store, open_store
from testfleet.testing import FakeClock
from testfleet.testing.tokens import bearer

CPU = HardwareKind.CPU
CUDA = HardwareKind.CUDA


def test_finished_work_comes_back_oldest_first_with_its_class(store_spec: str) -> None:
    gpu_worker = worker(
        "g1", capabilities=capabilities("g1.lab", hardware=[HardwareKind.CPU, HardwareKind.CUDA])
    )
    done = task_result("t2", "g1").model_copy(update={"execution_time_seconds": 4.0})
    failed = task_result("t3", "w1", ResultStatus.FAILED)
    tests = [
        replace(
            row(1, "run1.r0.00000", "t.py::a"), outcome=TestOutcome.PASSED, duration_seconds=0.5
        ),
        row(2, "run1.r0.00000", "t.py::b"),  # failed: says nothing about speed
        replace(row(3, "run1.r0.00001", "t.py::a"), outcome=TestOutcome.PASSED, crashed=True),
    ]
    tests = [replace(tests[0], worker_id="g1", recorded_time=T0 + 2), *tests[1:]]
    with open_store(store_spec) as store:
        store.write(
            WriteBatch(
                workers=[worker("w1"), gpu_worker],
                tasks=[
                    task("t1"),
                    task("t2"),
                    task("t3"),
                    task("t4"),
                    chunk_task("run1.r0.00000", "run1"),
                    chunk_task("run1.r0.00001", "run1"),
                ],
                results=[
                    result(1, "t1", received_time=T0 + 1),
                    result(2, "t2", "g1", received_time=T0 + 3, result=done),
                    result(3, "t3", received_time=T0 + 4, result=failed),
                    result(4, "t4", counted=False, received_time=T0 + 5),  # late
                ],
                test_rows=tests,
            )
        )
        samples = store.speed_samples()
    key = work_key(TaskType.SIMULATED, {"duration_seconds": 1.0})  # store_builders.spec
    assert samples == [
        SpeedSample("w1", CPU, key, 1.5),
        SpeedSample("g1", CUDA, node_work_key("path:/srv/p", "t.py::a"), 0.5),
        SpeedSample("g1", CUDA, key, 4.0),
    ]


def test_the_newest_rows_are_kept_under_the_limit(store_spec: str) -> None:
    with open_store(store_spec) as store:
        store.write(
            WriteBatch(
                workers=[worker("w1")],
                tasks=[task(f"t{i}") for i in range(5)],
                results=[result(i + 1, f"t{i}", received_time=T0 + i) for i in range(5)],
            )
        )
        assert len(store.speed_samples(limit=2)) == 2
        assert len(store.speed_samples()) == 5


def test_a_restarted_coordinator_shows_the_speeds_history_left(tmp_path: Path) -> None:
    path = tmp_path / "speeds.duckdb"
    viewer = bearer(path, Role.VIEWER, "viewer")
    # Eight pieces of work, each run on both workers: w2 took twice as long.
    tasks, results = [], []
    for k in range(8):
        for n, (worker_id, took) in enumerate((("w1", 5.0), ("w2", 10.0))):
            task_id = f"t{k}-{worker_id}"
            tasks.append(task(task_id, spec=spec(task_id, config={"seed": k})))
            done = task_result(task_id, worker_id).model_copy(
                update={"execution_time_seconds": took}
            )
            results.append(
                result(2 * k + n + 1, task_id, worker_id, received_time=T0 + k, result=done)
            )
    with Store(path) as store:
        store.write(WriteBatch(workers=[worker("w1"), worker("w2")], tasks=tasks, results=results))
    with TestClient(create_app(path, clock=FakeClock(T0 + 100))) as client:
        answer = client.get("/api/v1/workers", headers=viewer)
    assert answer.status_code == 200, answer.text
    shown = {w["worker_id"]: w for w in answer.json()["workers"]}
    assert shown["w1"]["speed_factor"] > 1.8
    assert shown["w2"]["speed_factor"] < 0.55
    assert shown["w2"]["speed_samples"] >= 5
