"""The queue's side of requirement fallbacks: keys by slice, in-place re-keying at expiry,
and the next expiry a time-jumping driver wakes for."""

from __future__ import annotations

from typing import Any

from testfleet.coordinator.task_queue import TaskQueue, match_key
from testfleet.domain.task import TaskSpec

H200 = {"hardware": ["cuda"], "gpu_model": "H200"}


def spec(task_id: str, **fields: Any) -> TaskSpec:
    document: dict[str, Any] = {"task_id": task_id, "type": "simulated", "config": {}}
    document.update(fields)
    return TaskSpec.model_validate(document)


def with_fallback(task_id: str, after: float = 60.0) -> TaskSpec:
    return spec(
        task_id,
        requirements=H200,
        fallbacks=[{"after_seconds": after, "requirements": {"hardware": ["cuda"]}}],
    )


def test_keys_include_later_slices_so_the_same_requirements_with_other_fallbacks_differ() -> None:
    plain = spec("a", requirements=H200)
    assert match_key(plain) != match_key(with_fallback("b"))
    assert match_key(with_fallback("b")) == match_key(with_fallback("c"))
    # On its last slice a task shares the key of tasks that asked for that from the start.
    assert match_key(with_fallback("b"), 1) == match_key(
        spec("d", requirements={"hardware": ["cuda"]})
    )


def test_advance_re_keys_in_place_and_skips_tasks_that_left() -> None:
    queue = TaskQueue()
    specs = {
        s.task_id: s
        for s in (with_fallback("first"), spec("plain", requirements=H200), with_fallback("gone"))
    }
    for at, task in enumerate(specs.values()):
        queue.push(task, float(at))
    assert queue.next_slice_expiry() == 60.0
    queue.remove("gone")
    assert queue.take_keys_changed()
    assert queue.advance_slices(specs.__getitem__, 59.0) == []
    assert queue.advance_slices(specs.__getitem__, 62.0) == [("first", 1)]
    assert queue.slice_of("first") == 1
    assert queue.next_slice_expiry() is None  # "gone" left; "first" is on its last slice
    assert queue.take_keys_changed()
    (level,) = queue.pending_by_priority().values()
    order = [(p.task_id, p.queued_at, p.requirements.gpu_model) for p in level]
    assert order == [("first", 0.0, None), ("plain", 1.0, "H200")]
    assert set(queue.key_requirements()) == {
        match_key(specs["first"], 1),
        match_key(specs["plain"]),
    }
    assert queue.later_slices(match_key(specs["first"], 0)) == []  # no task on that key now


def test_a_requeue_starts_from_the_slice_in_force_since_submission() -> None:
    queue = TaskQueue()
    task = with_fallback("t", after=60.0)
    key = queue.push(task, 500.0, submitted_at=0.0, now=500.0)
    assert key == match_key(task, 1)
    assert queue.slice_of("t") == 1
    assert queue.next_slice_expiry() is None
