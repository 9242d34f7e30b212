"""test_results: one row per test of a test task, polled by seq, and duration history.

Runs on a real DuckDB file. Rows are built as the coordinator builds them
(``TestResultRow`` around a worker's ``TestRecord``).
"""

from __future__ import annotations

from dataclasses import replace

from store_builders import T0, spec, worker

from testfleet.domain.enums import TaskStatus, TaskType
from testfleet.domain.pytest_tasks import (
    PhaseReport,
    ReportOutcome,
    TestLocation,
    TestOutcome,
    TestPhase,
    TestRecord,
    TestResultRow,
)
from testfleet.domain.records import TaskRecord, WriteBatch
from testfleet.store import open_store


def chunk_task(task_id: str, run_id: str, status: TaskStatus = TaskStatus.QUEUED) -> TaskRecord:
    document = spec(
        task_id,
        type=TaskType.TEST,
        config={
            "run_id": run_id,
            "project": {"path": "/srv/p"},
            "node_ids": ["t.py::a", "t.py::b"],
        },
    )
    return TaskRecord(spec=document, status=status, create_time=T0, queued_at=T0)


def row(
    seq: int, task_id: str, nodeid: str, *, run_id: str = "run1", **changes: object
) -> TestResultRow:
    record = TestRecord(
        nodeid=nodeid,
        location=TestLocation(path="t.py", lineno=3, domain=nodeid.split("::")[1]),
        phases=[
            PhaseReport(when=TestPhase.SETUP, outcome=ReportOutcome.PASSED),
            PhaseReport(
                when=TestPhase.CALL,
                outcome=ReportOutcome.FAILED,
                duration=0.75,
                longrepr="E   assert 1 == 2",
                sections=[("Captured stdout call", "hi\n")],
            ),
            PhaseReport(when=TestPhase.TEARDOWN, outcome=ReportOutcome.PASSED),
        ],
    )
    base = TestResultRow(
        seq=seq,
        task_id=task_id,
        nodeid=nodeid,
        attempt_id=seq,
        worker_id="w1",
        run_id=run_id,
        project="path:/srv/p",
        rerun=0,
        outcome=TestOutcome.FAILED,
        duration_seconds=0.75,
        crashed=False,
        recorded_time=T0 + seq,
        record=record,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_rows_read_back_equal_and_page_by_seq(store_spec: str) -> None:
    with open_store(store_spec) as store:
        store.write(
            WriteBatch(
                workers=[worker("w1")],
                tasks=[chunk_task("run1.r0.00000", "run1")],
                test_rows=[row(1, "run1.r0.00000", "t.py::a"), row(2, "run1.r0.00000", "t.py::b")],
            )
        )
        store.write(WriteBatch(test_rows=[row(3, "other.r0.00000", "t.py::a", run_id="other")]))
        rows = store.run_test_rows("run1")
        assert rows == [row(1, "run1.r0.00000", "t.py::a"), row(2, "run1.r0.00000", "t.py::b")]
        assert [r.seq for r in store.run_test_rows("run1", after_seq=1)] == [2]
        assert [r.seq for r in store.run_test_rows("run1", limit=1)] == [1]
        assert store.run_test_rows("run1", after_seq=2) == []


def test_a_test_is_recorded_once_per_task(store_spec: str) -> None:
    with open_store(store_spec) as store:
        store.write(WriteBatch(test_rows=[row(1, "run1.r0.00000", "t.py::a")]))
        # A repeat (a re-sent result, or after a coordinator restart) keeps the first.
        store.write(
            WriteBatch(test_rows=[row(5, "run1.r0.00000", "t.py::a", outcome=TestOutcome.PASSED)])
        )
        [only] = store.run_test_rows("run1")
        assert (only.seq, only.outcome) == (1, TestOutcome.FAILED)


def test_run_tasks_are_found_by_the_run_id_in_their_config(store_spec: str) -> None:
    with open_store(store_spec) as store:
        store.write(
            WriteBatch(
                tasks=[
                    chunk_task("run1.r0.00000", "run1", TaskStatus.COMPLETED),
                    chunk_task("run1.r1.00000", "run1"),
                    chunk_task("run2.r0.00000", "run2"),
                ]
            )
        )
        found = store.run_tasks("run1")
        assert [(t.task_id, t.status) for t in found] == [
            ("run1.r0.00000", TaskStatus.COMPLETED),
            ("run1.r1.00000", TaskStatus.QUEUED),
        ]


def test_durations_are_the_median_of_recent_uncrashed_runs(store_spec: str) -> None:
    with open_store(store_spec) as store:
        rows = [
            row(seq, f"run{seq}.r0.00000", "t.py::a", duration_seconds=seconds)
            for seq, seconds in enumerate([9.0, 1.0, 2.0, 3.0, 4.0, 5.0], start=1)
        ]
        rows.append(row(7, "run7.r0.00000", "t.py::a", duration_seconds=100.0, crashed=True))
        rows.append(row(8, "run8.r0.00000", "t.py::b", duration_seconds=0.5))
        rows.append(row(9, "run9.r0.00000", "t.py::c", project="git:elsewhere"))
        store.write(WriteBatch(test_rows=rows))
        # The oldest (9.0) is beyond the last five; the crash does not count.
        assert store.test_durations("path:/srv/p") == {"t.py::a": 3.0, "t.py::b": 0.5}
        assert store.test_durations("path:/nowhere") == {}


def test_recovery_loads_recorded_tests_of_open_tasks_and_the_next_seq(store_spec: str) -> None:
    path = store_spec
    with open_store(path) as store:
        store.write(
            WriteBatch(
                workers=[worker("w1")],
                tasks=[
                    chunk_task("run1.r0.00000", "run1", TaskStatus.QUEUED),
                    chunk_task("run1.r0.00001", "run1", TaskStatus.COMPLETED),
                ],
                test_rows=[
                    row(1, "run1.r0.00000", "t.py::a"),
                    row(2, "run1.r0.00001", "t.py::a"),
                    row(3, "run1.r0.00001", "t.py::b"),
                ],
            )
        )
    with open_store(path) as store:
        state = store.load_state()
        assert state.reported_tests == {"run1.r0.00000": {"t.py::a"}}
        assert state.next_test_seq == 4
