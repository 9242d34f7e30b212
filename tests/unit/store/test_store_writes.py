"""Batch writes: upserts through a task's lifecycle, dedupe, foreign keys, atomicity.

The foreign-key tests pin down what DuckDB (1.5) allows: rows referenced by
another table's foreign key can still be updated because the referenced tables
(``worker_nodes``, ``distributed_tasks``) have no foreign keys or secondary
indexes of their own (see ``testfleet.store.schema``).
"""

from __future__ import annotations

import functools
import queue
import threading
from dataclasses import replace

import pytest
from store_builders import T0, attempt, result, task, worker

from testfleet.domain.enums import AttemptStatus, ErrorClass, TaskStatus, WorkerStatus
from testfleet.domain.records import NewRows, WriteBatch
from testfleet.store import Store, StoreError


@pytest.fixture
def store(any_store: Store) -> Store:
    """On DuckDB and on PostgreSQL (the ``any_store`` fixture)."""
    any_store.write(WriteBatch(workers=[worker("w1"), worker("w2")]))
    return any_store


def test_a_task_is_upserted_through_its_whole_lifecycle(store: Store) -> None:
    queued = task("t1")
    store.write(WriteBatch(tasks=[queued]))
    assert store.get_task("t1") == queued

    assigned = replace(
        queued, status=TaskStatus.ASSIGNED, worker_id="w1", attempts=1, current_attempt_id=1
    )
    lease = attempt(1, "t1", "w1", AttemptStatus.ASSIGNED)
    store.write(WriteBatch(tasks=[assigned], attempts=[lease]))
    assert store.get_task("t1") == assigned
    assert store.get_attempts("t1") == [lease]

    running = replace(assigned, status=TaskStatus.RUNNING, start_time=T0 + 2)
    accepted = replace(lease, status=AttemptStatus.RUNNING, accepted_time=T0 + 2)
    store.write(WriteBatch(tasks=[running], attempts=[accepted]))
    assert store.get_task("t1") == running
    assert store.get_attempts("t1") == [accepted]

    completed = replace(running, status=TaskStatus.COMPLETED, end_time=T0 + 4)
    finished = replace(
        accepted, status=AttemptStatus.COMPLETED, end_time=T0 + 4, execution_time_seconds=2.0
    )
    outcome = result(1, "t1", "w1")
    store.write(WriteBatch(tasks=[completed], attempts=[finished], results=[outcome]))

    assert store.get_task("t1") == completed
    assert store.get_attempts("t1") == [finished]
    assert store.get_counted_result("t1") == outcome
    assert store.count_tasks() == 1
    assert store.attempt_count() == 1


def test_a_whole_lifecycle_in_one_batch_stores_the_last_state(store: Store) -> None:
    queued = task("t1")
    completed = replace(
        queued, status=TaskStatus.COMPLETED, worker_id="w1", attempts=1, current_attempt_id=1
    )
    assigned = attempt(1, "t1")
    finished = replace(assigned, status=AttemptStatus.COMPLETED, end_time=T0 + 4)

    store.write(
        WriteBatch(
            tasks=[queued, completed],
            attempts=[assigned, finished],
            results=[result(1, "t1"), result(1, "t1", counted=False)],
        )
    )

    assert store.get_task("t1") == completed
    assert store.get_attempts("t1") == [finished]
    # Results are the exception: the first report of an attempt stands.
    assert [r.counted for r in store.get_results("t1")] == [True]


def test_the_last_record_per_key_wins_within_a_batch(store: Store) -> None:
    first, second = worker("w3", slots=1), worker("w3", slots=8, status=WorkerStatus.DRAINING)
    store.write(
        WriteBatch(
            workers=[first, second],
            tasks=[task("a"), task("b"), task("a", create_time=T0 + 9)],
        )
    )

    assert [w for w in store.list_workers() if w.worker_id == "w3"] == [second]
    assert store.get_task("a") == task("a", create_time=T0 + 9)
    assert store.count_tasks() == 2


def test_every_table_can_be_updated_while_other_tables_reference_it(store: Store) -> None:
    store.write(
        WriteBatch(
            tasks=[task("t1", TaskStatus.RUNNING, worker_id="w1", current_attempt_id=1)],
            attempts=[attempt(1, "t1", "w1", AttemptStatus.RUNNING)],
            results=[result(1, "t1", "w1", counted=False)],
        )
    )
    # worker_nodes is referenced by history and results; distributed_tasks by
    # history and results; history by nothing. Results are never rewritten.
    lost_worker = worker("w1", status=WorkerStatus.LOST, last_heartbeat=T0 + 99)
    requeued = task("t1", TaskStatus.QUEUED, lost_attempts=1, error_class=ErrorClass.WORKER_LOST)
    lost = attempt(1, "t1", "w1", AttemptStatus.LOST, end_time=T0 + 99)
    recounted = result(1, "t1", "w1", counted=True)
    store.write(
        WriteBatch(workers=[lost_worker], tasks=[requeued], attempts=[lost], results=[recounted])
    )

    assert [w for w in store.list_workers() if w.worker_id == "w1"] == [lost_worker]
    assert store.get_task("t1") == requeued
    assert store.get_attempts("t1") == [lost]
    assert store.get_results("t1") == [result(1, "t1", "w1", counted=False)]


def test_an_attempt_may_move_to_another_task_and_worker_on_update(store: Store) -> None:
    # Upserts rewrite the indexed task_id column of history too (last write wins).
    store.write(WriteBatch(tasks=[task("t1"), task("t2")], attempts=[attempt(1, "t1", "w1")]))
    store.write(WriteBatch(attempts=[attempt(1, "t2", "w2")]))

    assert store.get_attempts("t1") == []
    assert store.get_attempts("t2") == [attempt(1, "t2", "w2")]


def test_a_task_may_name_a_worker_that_is_not_stored(store: Store) -> None:
    # distributed_tasks.worker_id has no foreign key (DuckDB could not update the
    # task otherwise), so this is allowed; history and results do check.
    store.write(WriteBatch(tasks=[task("t1", worker_id="never-registered")]))
    stored = store.get_task("t1")
    assert stored is not None
    assert stored.worker_id == "never-registered"


@pytest.mark.parametrize(
    ("bad_batch", "missing"),
    [
        (WriteBatch(attempts=[attempt(7, "ghost")]), "ghost"),
        (WriteBatch(attempts=[attempt(7, "t0", "ghost-worker")]), "ghost-worker"),
        (WriteBatch(results=[result(7, "ghost")]), "ghost"),
        (WriteBatch(results=[result(7, "t0", "ghost-worker")]), "ghost-worker"),
    ],
    ids=["attempt-task", "attempt-worker", "result-task", "result-worker"],
)
def test_a_batch_that_breaks_a_foreign_key_stores_nothing(
    store: Store, bad_batch: WriteBatch, missing: str
) -> None:
    before = task("t0")
    store.write(WriteBatch(tasks=[before]))
    batch = WriteBatch(
        workers=[worker("w9")],
        tasks=[task("t1"), replace(before, status=TaskStatus.CANCELLED)],
        attempts=[attempt(1, "t1"), *bad_batch.attempts],
        results=[result(1, "t1"), *bad_batch.results],
    )

    with pytest.raises(StoreError, match="foreign key") as raised:
        store.write(batch)

    # The store names the culprit itself (DuckDB's message may name another key).
    assert f"refer to unknown {'workers' if 'worker' in missing else 'tasks'} {missing!r}" in str(
        raised.value
    )
    assert "2 tasks, " in str(raised.value)
    assert store.get_task("t1") is None
    assert store.get_task("t0") == before
    assert store.attempt_count() == 0
    assert store.get_results("t1") == []
    assert [w.worker_id for w in store.list_workers()] == ["w1", "w2"]
    # The writer is usable again after the rollback.
    store.write(WriteBatch(tasks=[task("t1")]))
    assert store.count_tasks() == 2


def test_a_record_that_cannot_be_encoded_fails_before_touching_the_database(
    store: Store,
) -> None:
    unserializable = attempt(1, "t1", hardware_metrics={"sensor": object()})
    with pytest.raises(StoreError, match="encode"):
        store.write(WriteBatch(tasks=[task("t1")], attempts=[unserializable]))
    assert store.count_tasks() == 0


def test_an_empty_batch_is_a_no_op(store: Store) -> None:
    store.write(WriteBatch())
    assert store.count_tasks() == 0


def test_a_closed_store_refuses_reads_and_writes() -> None:
    store = Store(":memory:")
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        store.write(WriteBatch(tasks=[task("t1")]))
    with pytest.raises(StoreError, match="closed"):
        store.list_tasks()


def test_readers_in_other_threads_never_see_half_a_batch(store: Store) -> None:
    """A reader thread reads after every statement of every batch, while the
    writer's transaction is open, and after every commit: the writer waits for
    each read, so every read lands where it must (no timing involved)."""
    batches, per_batch = 5, 20
    requests: queue.Queue[str | None] = queue.Queue()
    answers: queue.Queue[tuple[str, int] | BaseException] = queue.Queue()

    def reader() -> None:
        while (where := requests.get()) is not None:
            try:
                counted = sum(store.status_counts().values())
                listed = len(store.list_tasks(limit=1000))
                assert counted == listed
                answers.put((where, counted))
            except BaseException as error:
                answers.put(error)

    def read(where: str) -> tuple[str, int]:
        """Have the reader thread read now, and wait for what it saw."""
        requests.put(where)
        answer = answers.get(timeout=30)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    seen: list[tuple[str, int]] = []

    def read_inside(batch: int) -> None:
        seen.append(read(f"inside batch {batch}"))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        seen.append(read("before"))
        for b in range(batches):
            tasks = [task(f"t{b}-{i}") for i in range(per_batch)]
            attempts = [attempt(b * per_batch + i + 1, t.task_id) for i, t in enumerate(tasks)]
            store.commit(
                store.prepare(WriteBatch(tasks=tasks, attempts=attempts)),
                between_statements=functools.partial(read_inside, b),
            )
            seen.append(read(f"after batch {b}"))
    finally:
        requests.put(None)
        thread.join(timeout=30)

    expected = [("before", 0)]
    for b in range(batches):
        # Two statements (tasks, then attempts): a read after each sees none of the batch.
        expected += [(f"inside batch {b}", b * per_batch)] * 2
        expected.append((f"after batch {b}", (b + 1) * per_batch))
    assert seen == expected


def test_records_known_new_are_inserted_and_known_stored_are_updated(store: Store) -> None:
    # As the coordinator writes them: a batch says which tasks and attempts are new.
    new_task = task("n1")
    new_attempt = attempt(50, "n1", "w1", AttemptStatus.ASSIGNED)
    store.write(WriteBatch(tasks=[new_task], new_rows=NewRows(task_ids={"n1"})))
    store.write(WriteBatch(attempts=[new_attempt], new_rows=NewRows(attempt_ids={50})))
    new_task.status = TaskStatus.RUNNING
    new_attempt.status = AttemptStatus.RUNNING
    store.write(WriteBatch(tasks=[new_task], attempts=[new_attempt], new_rows=NewRows()))
    stored_task = store.get_task("n1")
    assert stored_task is not None
    assert stored_task.status is TaskStatus.RUNNING
    assert [a.status for a in store.get_attempts("n1")] == [AttemptStatus.RUNNING]
    # A record not named new is updated, never inserted: one that has no row
    # stays without one (the coordinator only says this of rows it wrote).
    store.write(WriteBatch(tasks=[task("n3")], new_rows=NewRows()))
    assert store.get_task("n3") is None
    # A record that claims to be new but is not breaks the primary key: the
    # whole batch is refused rather than silently merged.
    with pytest.raises(StoreError, match="n1"):
        store.write(
            WriteBatch(tasks=[task("n2"), task("n1")], new_rows=NewRows(task_ids={"n1", "n2"}))
        )
    assert store.get_task("n2") is None
