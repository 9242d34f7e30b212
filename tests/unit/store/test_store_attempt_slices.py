"""Issue 14's columns (migration 9): an attempt's requirement slice and whether it was a
speculative copy; a task's fallbacks and hints, and its slice; written and read back on
both stores."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from store_builders import T0, attempt, task, worker

from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.state import CoordinatorState
from testfleet.domain.enums import AttemptStatus, TaskStatus
from testfleet.domain.records import WriteBatch
from testfleet.domain.task import TaskSpec
from testfleet.store import open_store


def test_slice_index_and_speculative_round_trip(any_store: Any) -> None:
    plain = attempt(1, "t1")
    fallback = attempt(2, "t1", "w2", AttemptStatus.RUNNING, slice_index=2, speculative=True)
    any_store.write(
        WriteBatch(
            workers=[worker("w1"), worker("w2")],
            tasks=[task("t1", TaskStatus.RUNNING, current_attempt_id=1)],
            attempts=[plain, fallback],
        )
    )
    stored = {a.attempt_id: a for a in any_store.get_attempts("t1")}
    assert (stored[1].slice_index, stored[1].speculative) == (0, False)
    assert (stored[2].slice_index, stored[2].speculative) == (2, True)
    # A later write of the same attempt (its end) keeps both.
    fallback.status = AttemptStatus.CANCELLED
    any_store.write(WriteBatch(attempts=[fallback]))
    again = {a.attempt_id: a for a in any_store.get_attempts("t1")}
    assert again[2] == fallback


def test_a_tasks_fallbacks_hints_and_slice_are_stored_and_recovered(store_spec: str) -> None:
    document = {
        "task_id": "t2",
        "type": "simulated",
        "config": {},
        "requirements": {"hardware": ["cuda"], "gpu_model": "H200"},
        "fallbacks": [{"after_seconds": 600, "requirements": {"hardware": ["cuda"]}}],
        "idempotent": False,
        "expected_seconds": 12.5,
    }
    record = replace(
        task("t2"), spec=TaskSpec.model_validate(document), slice_index=1, queued_at=T0
    )
    plain = task("t3")
    with open_store(store_spec) as store:
        store.write(WriteBatch(tasks=[record, plain]))
    with open_store(store_spec) as reopened:
        state = reopened.load_state()
        stored = reopened.get_task("t2")
    assert stored == record
    assert stored is not None
    assert stored.spec == record.spec
    assert {t.task_id: t for t in state.open_tasks}["t2"].spec.fallbacks == record.spec.fallbacks
    assert {t.task_id: t for t in state.open_tasks}["t3"] == plain


def test_a_speculative_pair_cut_by_a_restart_resumes_only_the_current_attempt(
    store_spec: str,
) -> None:
    running = task("pair", TaskStatus.RUNNING, current_attempt_id=1)
    original = attempt(1, "pair", "w1", AttemptStatus.RUNNING)
    copy = attempt(2, "pair", "w2", AttemptStatus.RUNNING, speculative=True)
    with open_store(store_spec) as store:
        store.write(
            WriteBatch(
                workers=[worker("w1"), worker("w2")], tasks=[running], attempts=[original, copy]
            )
        )
    with open_store(store_spec) as reopened:
        state = reopened.load_state()
    assert state.open_attempts == [original]
    assert state.stale_attempts == [copy]

    coordinator = CoordinatorState(CoordinatorSettings(), T0 + 10, recovered=state)
    written = {a.attempt_id: a for a in coordinator.take_effects().batch.attempts}
    assert written[2].status is AttemptStatus.CANCELLED
    assert "the coordinator restarted" in (written[2].error_message or "")
    assert 1 in coordinator.open_attempts
    assert 2 not in coordinator.open_attempts
