"""Read queries: filtering and paging tasks, counts, duplicate ids, attempts and results."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from store_builders import T0, attempt, result, spec, task, worker

from testfleet.domain.enums import TaskStatus, TaskType
from testfleet.domain.records import TaskRecord, WriteBatch
from testfleet.store import Store

Q, A, R, C = TaskStatus.QUEUED, TaskStatus.ASSIGNED, TaskStatus.RUNNING, TaskStatus.COMPLETED


@pytest.fixture
def store(any_store: Store) -> Iterator[Store]:
    """Six tasks created in this order: b, a (same time as b), c, d, e, f."""
    command = spec("d", type=TaskType.COMMAND, config={"argv": ["true"]})
    with any_store as opened:
        opened.write(
            WriteBatch(
                workers=[worker("w1"), worker("w2")],
                tasks=[
                    task("b", Q, create_time=T0),
                    task("a", Q, create_time=T0),
                    task("c", A, create_time=T0 + 1, worker_id="w1"),
                    task("d", R, create_time=T0 + 2, worker_id="w2", spec=command),
                    task("e", C, create_time=T0 + 3, worker_id="w1"),
                    task("f", C, create_time=T0 + 4, worker_id="w2"),
                ],
            )
        )
        yield opened


def ids(tasks: list[TaskRecord]) -> list[str]:
    return [t.task_id for t in tasks]


def test_tasks_are_listed_by_create_time_then_task_id(store: Store) -> None:
    assert ids(store.list_tasks()) == ["a", "b", "c", "d", "e", "f"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"statuses": [Q]}, ["a", "b"]),
        ({"statuses": {C, R}}, ["d", "e", "f"]),
        ({"statuses": []}, []),
        ({"task_type": TaskType.COMMAND}, ["d"]),
        ({"task_type": TaskType.SIMULATED, "statuses": [C]}, ["e", "f"]),
        ({"worker_id": "w1"}, ["c", "e"]),
        ({"worker_id": "w2", "statuses": [C]}, ["f"]),
        ({"worker_id": "nobody"}, []),
    ],
)
def test_tasks_are_filtered_and_counted(
    store: Store, filters: dict[str, object], expected: list[str]
) -> None:
    assert ids(store.list_tasks(**filters)) == expected  # type: ignore[arg-type]
    assert store.count_tasks(**filters) == len(expected)  # type: ignore[arg-type]


def test_newest_first_reverses_the_order_and_pages_from_the_newest(store: Store) -> None:
    # The dashboard's lists: the latest tasks, not the oldest, when there are many.
    assert ids(store.list_tasks(newest_first=True)) == ["f", "e", "d", "c", "b", "a"]
    assert ids(store.list_tasks(newest_first=True, limit=2)) == ["f", "e"]
    assert ids(store.list_tasks(statuses=[Q], newest_first=True, limit=1)) == ["b"]


def test_pages_follow_the_same_order(store: Store) -> None:
    pages = [ids(store.list_tasks(limit=4, offset=offset)) for offset in (0, 4, 8)]
    assert pages == [["a", "b", "c", "d"], ["e", "f"], []]
    assert ids(store.list_tasks(statuses=[Q, C], limit=2, offset=1)) == ["b", "e"]
    assert store.list_tasks(limit=0) == []


def test_negative_paging_arguments_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.list_tasks(limit=-1)
    with pytest.raises(ValueError, match="offset"):
        store.list_tasks(offset=-1)


def test_status_counts_name_every_status(store: Store) -> None:
    assert store.status_counts() == {
        Q: 2,
        A: 1,
        R: 1,
        C: 2,
        TaskStatus.FAILED: 0,
        TaskStatus.TIMED_OUT: 0,
        TaskStatus.CANCELLED: 0,
    }
    with Store(":memory:") as empty:
        assert empty.status_counts() == dict.fromkeys(TaskStatus, 0)


def test_existing_task_ids_finds_only_stored_ones(store: Store) -> None:
    assert store.existing_task_ids(["a", "zz", "f", "a"]) == {"a", "f"}
    assert store.existing_task_ids([]) == set()
    many = [f"new-{i}" for i in range(5000)]
    assert store.existing_task_ids([*many, "c"]) == {"c"}


def test_get_task_of_an_unknown_id_is_none(store: Store) -> None:
    assert store.get_task("unknown") is None
    assert store.get_attempts("unknown") == []
    assert store.get_results("unknown") == []


def test_attempts_come_in_attempt_order_and_the_counted_result_is_the_outcome(
    store: Store,
) -> None:
    first = attempt(9, "d", "w1", attempt=1)
    second = attempt(4, "d", "w2", attempt=2)
    late = result(9, "d", "w1", counted=False)
    outcome = result(4, "d", "w2", counted=True)
    store.write(WriteBatch(attempts=[second, first], results=[late, outcome]))

    assert store.get_attempts("d") == [first, second]
    assert store.get_results("d") == [outcome, late]  # by attempt id
    assert store.get_counted_result("d") == outcome
    assert store.get_counted_result("a") is None
    assert store.attempt_count() == 2


def test_workers_are_listed_by_id(store: Store) -> None:
    store.write(WriteBatch(workers=[worker("w0")]))
    assert [w.worker_id for w in store.list_workers()] == ["w0", "w1", "w2"]


def test_a_recorded_result_is_never_rewritten(store: Store) -> None:
    outcome = result(4, "d", "w2", counted=True)
    store.write(WriteBatch(results=[outcome]))
    # The worker re-sends it after a reconnect; the coordinator no longer knows
    # the attempt and records the copy as not counted. The original stands.
    resent = result(4, "d", "w2", counted=False)
    store.write(WriteBatch(results=[resent]))
    assert store.get_counted_result("d") == outcome
    # Within one batch, too, the first report stands.
    first, second = result(9, "d", "w1", counted=True), result(9, "d", "w1", counted=False)
    store.write(WriteBatch(attempts=[attempt(9, "d", "w1")], results=[first, second]))
    assert [r.counted for r in store.get_results("d")] == [True, True]


def test_all_task_ids_lists_every_stored_task(store: Store) -> None:
    ids = store.all_task_ids()
    assert ids == {t.task_id for t in store.list_tasks(limit=10_000)}
    assert "d" in ids
    with Store(":memory:") as empty:
        assert empty.all_task_ids() == set()
