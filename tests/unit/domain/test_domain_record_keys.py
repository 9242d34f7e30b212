"""A task record works its spec's two work keys out once and keeps them.

The queue's pending entry, the speed books and the straggler estimate all read
a task's work keys; ``TaskRecord`` computes each on first use (JSON-encoding
the config, 7% of a 10,000-worker simulation when done per use). The kept keys
must be exactly what the functions give, and a queue told the key must put
that one on the entry it queues.
"""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest

import testfleet.domain.records as records
from testfleet.coordinator.speculation import work_key as speculation_key
from testfleet.coordinator.task_queue import TaskQueue
from testfleet.domain.enums import TaskStatus
from testfleet.domain.records import TaskRecord
from testfleet.domain.task import TaskSpec
from testfleet.domain.work_keys import canonical_json, duration_key, spec_keys, spec_work_key


def record(config: dict[str, object]) -> TaskRecord:
    spec = TaskSpec.model_validate({"task_id": "t1", "type": "simulated", "config": config})
    return TaskRecord(spec=spec, status=TaskStatus.QUEUED, create_time=0.0, queued_at=0.0)


def test_the_kept_keys_are_the_functions_keys() -> None:
    task = record({"duration_seconds": 2.0, "seed": 7})
    assert task.work_key == spec_work_key(task.spec)
    assert task.duration_key == duration_key(task.spec) == speculation_key(task.spec)
    assert task.work_key != record({"duration_seconds": 3.0, "seed": 7}).work_key


def test_both_keys_come_from_one_encoding_worked_out_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[TaskSpec] = []

    def counted(spec: TaskSpec) -> tuple[str, str]:
        calls.append(spec)
        return spec_keys(spec)

    monkeypatch.setattr(records, "spec_keys", counted)
    for first in ("work_key", "duration_key"):
        calls.clear()
        task = record({"seed": 3})
        getattr(task, first)
        for _ in range(3):
            assert task.work_key == spec_work_key(task.spec)
            assert task.duration_key == duration_key(task.spec)
        assert calls == [task.spec]


@pytest.mark.parametrize(
    "document",
    [
        {"type": "simulated", "config": {"seed": 2, "duration_seconds": 1.5}},
        {"type": "command", "config": {"argv": ["true"], "env": {"A": "1"}}},
        {
            "type": "benchmark",
            "config": {"model": "bert-base-uncased", "batch_sizes": [1, 8], "device": "cpu"},
        },
    ],
)
def test_spec_keys_are_the_two_functions_keys(document: dict[str, object]) -> None:
    spec = TaskSpec.model_validate({"task_id": "t1", **document})
    assert spec_keys(spec) == (spec_work_key(spec), duration_key(spec))


def test_records_compare_and_print_without_their_kept_keys() -> None:
    task, twin = record({}), record({})
    _ = task.work_key, task.duration_key
    assert task == twin
    assert "_work_key" not in repr(task)


def test_the_queue_files_the_work_key_it_is_given() -> None:
    task = record({"seed": 1})
    queue = TaskQueue()
    queue.push(task.spec, 0.0, work_key=task.work_key)
    queue.push(record({"seed": 2}).spec.model_copy(update={"task_id": "t2"}), 0.0)
    pending = [p for level in queue.pending_by_priority().values() for p in level]
    assert [p.work_key for p in pending] == [
        task.work_key,
        spec_work_key(record({"seed": 2}).spec),
    ]


def test_the_kept_task_id_follows_a_replaced_spec() -> None:
    """``task_id`` is kept on the record (read ~10 times per task); a record made
    from another spec, as ``dataclasses.replace`` makes one, has the new id."""
    task = record({"seed": 1})
    assert task.task_id == task.spec.task_id == "t1"
    other = task.spec.model_copy(update={"task_id": "t2"})
    moved = dataclasses.replace(task, spec=other)
    assert moved.task_id == "t2"
    assert dataclasses.replace(task, reported_tests=None).task_id == "t1"
    assert "task_id" not in repr(task).replace("spec=TaskSpec(task_id", "")


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"b": 1, "a": [1, 2.5, {"z": None, "y": True}]},
        {"text": 'é\u2028"quoted"', "n": float("nan"), "big": 10**30},
        {"when": datetime.date(2026, 12, 7), "nested": {"b": [], "a": {}}},
    ],
)
def test_canonical_json_is_what_json_dumps_gives(config: dict[str, object]) -> None:
    """One shared encoder (no new ``JSONEncoder`` per key): the same text as before."""
    expected = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    assert canonical_json(config) == expected
    assert canonical_json(config) == expected  # and again: the encoder keeps nothing
