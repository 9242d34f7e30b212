"""Reopening a file gives the coordinator back exactly its unfinished work."""

from __future__ import annotations

from pathlib import Path

import duckdb
from store_builders import T0, attempt, result, task, worker

from testfleet.domain.enums import AttemptStatus, ErrorClass, TaskStatus, WorkerStatus
from testfleet.domain.records import WriteBatch
from testfleet.store import Store, open_store

AS = AttemptStatus


def test_load_state_after_reopening_returns_open_tasks_and_their_live_attempts(
    store_spec: str,
) -> None:
    path = store_spec
    workers = [worker("w1"), worker("w2", status=WorkerStatus.LOST)]
    waiting = task("waiting", TaskStatus.QUEUED, create_time=T0 + 1)
    assigned = task("assigned", TaskStatus.ASSIGNED, create_time=T0 + 2, current_attempt_id=1)
    running = task("running", TaskStatus.RUNNING, create_time=T0 + 3, current_attempt_id=3)
    # Requeued after its worker was lost: its current attempt is over.
    retrying = task(
        "retrying",
        TaskStatus.QUEUED,
        create_time=T0 + 4,
        current_attempt_id=4,
        not_before=T0 + 50,
        lost_attempts=1,
        error_class=ErrorClass.WORKER_LOST,
    )
    done = [
        task(f"done-{status.value}", status, create_time=T0, current_attempt_id=5)
        for status in (
            TaskStatus.COMPLETED,
            TaskStatus.FAILED,
            TaskStatus.TIMED_OUT,
            TaskStatus.CANCELLED,
        )
    ]
    live_assigned = attempt(1, "assigned", "w1", AS.ASSIGNED)
    old_lost = attempt(2, "running", "w2", AS.LOST, attempt=1)
    live_running = attempt(3, "running", "w1", AS.RUNNING, attempt=2, accepted_time=T0 + 5)
    over = attempt(4, "retrying", "w2", AS.LOST)
    finished = attempt(5, "done-completed", "w1", AS.COMPLETED)
    # A late result for the lost attempt with the highest id in the file.
    late = result(2, "running", "w2", counted=False)

    with open_store(path) as store:
        store.write(
            WriteBatch(
                workers=workers,
                tasks=[waiting, assigned, running, retrying, *done],
                attempts=[live_assigned, old_lost, live_running, over, finished],
                results=[late],
            )
        )

    with open_store(path) as reopened:
        state = reopened.load_state()

    assert state.open_tasks == [waiting, assigned, running, retrying]
    assert state.open_attempts == [live_assigned, live_running]
    assert state.workers == workers
    assert state.next_attempt_id == 6


def test_next_attempt_id_counts_results_too(any_store: Store) -> None:
    with any_store as store:
        store.write(
            WriteBatch(
                workers=[worker()],
                tasks=[task("t1")],
                attempts=[attempt(3, "t1")],
                results=[result(41, "t1")],
            )
        )
        assert store.load_state().next_attempt_id == 42


def test_an_empty_store_recovers_nothing(any_store: Store) -> None:
    with any_store as store:
        state = store.load_state()
    assert (state.open_tasks, state.open_attempts, state.workers) == ([], [], [])
    assert state.next_attempt_id == 1


def test_rows_that_cannot_be_read_are_left_out_and_reported(tmp_path: Path) -> None:
    # Issue 8: a worker whose memory an older build stored as null (from +inf)
    # kept every later coordinator from starting on the file.
    path = tmp_path / "fleet.duckdb"
    with Store(path) as store:
        store.write(
            WriteBatch(
                workers=[worker("w1"), worker("w2")],
                tasks=[task("good", TaskStatus.QUEUED), task("bad", TaskStatus.QUEUED)],
            )
        )
    connection = duckdb.connect(str(path))
    connection.execute(
        "UPDATE worker_nodes SET capabilities = "
        "json_object('hostname', 'x', 'os', 'Linux', 'python_version', '3', 'memory_gb', NULL) "
        "WHERE worker_id = 'w2'"
    )
    connection.execute(
        """UPDATE distributed_tasks SET config = '{"bogus": 1}' WHERE task_id = 'bad'"""
    )
    connection.close()

    with Store(path) as reopened:
        state = reopened.load_state()
        assert [t.task_id for t in state.open_tasks] == ["good"]
        assert [w.worker_id for w in state.workers] == ["w1"]
        assert len(state.unreadable_rows) == 2
        task_problem, worker_problem = state.unreadable_rows
        assert "task_id='bad' of distributed_tasks cannot be read" in task_problem
        assert "worker_id='w2' of worker_nodes cannot be read" in worker_problem
        assert "memory_gb" in worker_problem
        # The left-out task's id is still known, so it is never reused.
        assert "bad" in reopened.all_task_ids()
        # A worker left out is written afresh (an upsert) when it reconnects.
        reopened.write(WriteBatch(workers=[worker("w2")]))
        assert [w.worker_id for w in reopened.load_state().workers] == ["w1", "w2"]
