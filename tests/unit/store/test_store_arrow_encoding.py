"""``TableMapping.to_arrow`` reads plain attributes in one call per record and
converts times inline (``store/rows.py``); every cell must still be what the
column's own ``value`` gives, times as epoch microseconds rounded as
``to_micros`` rounds them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from store_builders import attempt, result, task, worker

from testfleet.domain.enums import TaskStatus
from testfleet.store.rows import ATTEMPTS, RESULTS, TASKS, WORKERS, TableMapping, to_micros


def cells_one_by_one(mapping: TableMapping[Any], records: list[Any], *, for_update: bool) -> Any:
    columns = mapping._update_columns() if for_update else mapping.columns
    return {c.name: [c.value(record) for record in records] for c in columns}


def as_micros(table: Any) -> dict[str, list[Any]]:
    """The table's columns as Python values, timestamps as integer microseconds."""
    out: dict[str, list[Any]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if str(column.type).startswith("timestamp"):
            out[name] = column.cast("int64").to_pylist()
        else:
            out[name] = column.to_pylist()
    return out


TASK_RECORDS = [
    task("t1"),
    replace(task("t2"), status=TaskStatus.RUNNING, start_time=1_800_000_000.0000005),
    replace(task("t3"), end_time=1_800_000_001.123456789, not_before=None),
]


@pytest.mark.parametrize("for_update", [False, True])
@pytest.mark.parametrize(
    ("mapping", "records"),
    [
        (TASKS, TASK_RECORDS),
        (ATTEMPTS, [attempt(1, "t1"), attempt(2, "t2", "w2")]),
        (RESULTS, [result(1, "t1")]),
        (WORKERS, [worker("w1"), worker("w2")]),
        (TASKS, []),
    ],
)
def test_every_cell_is_the_columns_own_value(
    mapping: TableMapping[Any], records: list[Any], for_update: bool
) -> None:
    encoded = as_micros(mapping.to_arrow(records, for_update=for_update))
    assert encoded == cells_one_by_one(mapping, records, for_update=for_update)


def test_times_round_to_the_nearest_microsecond_as_to_micros_does() -> None:
    record = replace(task("t1"), start_time=1_800_000_000.0000015, end_time=None)
    encoded = as_micros(TASKS.to_arrow([record]))
    assert encoded["start_time"] == [to_micros(1_800_000_000.0000015)]
    assert encoded["end_time"] == [None]
