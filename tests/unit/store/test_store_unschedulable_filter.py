"""Listing tasks by ``unschedulable``: the queued tasks that carry a reason.

``unschedulable`` is what the CLI shows as the status of a queued task no
connected worker can run; ``testfleet tasks --status unschedulable`` and
``GET /api/v1/tasks?status=unschedulable`` list exactly those.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from store_builders import T0, task, worker

from testfleet.domain.enums import ShownStatus, TaskStatus
from testfleet.domain.records import WriteBatch
from testfleet.store import Store

CUDA = "hardware: needs one of [cuda]; connected workers offer [cpu]"


@pytest.fixture
def store(any_store: Store) -> Iterator[Store]:
    with any_store as opened:
        opened.write(
            WriteBatch(
                workers=[worker("w1")],
                tasks=[
                    task("waiting", create_time=T0),
                    task("needs-cuda", create_time=T0 + 1, unschedulable_reason=CUDA),
                    task("running", TaskStatus.RUNNING, create_time=T0 + 2, worker_id="w1"),
                    task("done", TaskStatus.COMPLETED, create_time=T0 + 3, worker_id="w1"),
                ],
            )
        )
        yield opened


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([ShownStatus.UNSCHEDULABLE], ["needs-cuda"]),
        # queued keeps meaning every queued task, unschedulable or not
        ([ShownStatus.QUEUED], ["waiting", "needs-cuda"]),
        ([ShownStatus.QUEUED, ShownStatus.UNSCHEDULABLE], ["waiting", "needs-cuda"]),
        ([ShownStatus.UNSCHEDULABLE, ShownStatus.COMPLETED], ["needs-cuda", "done"]),
        ([TaskStatus.RUNNING, ShownStatus.UNSCHEDULABLE], ["needs-cuda", "running"]),
    ],
)
def test_unschedulable_lists_queued_tasks_with_a_reason(
    store: Store, statuses: list[ShownStatus], expected: list[str]
) -> None:
    assert [t.task_id for t in store.list_tasks(statuses=statuses)] == expected
    assert store.count_tasks(statuses=statuses) == len(expected)


def test_every_task_status_is_a_shown_status() -> None:
    assert {s.value for s in TaskStatus} | {"unschedulable"} == {s.value for s in ShownStatus}
