"""An attempt's requirement slice and whether it was a speculative copy (migration 9),
written and read back on both stores."""

from __future__ import annotations

from typing import Any

from store_builders import attempt, task, worker

from testfleet.domain.enums import AttemptStatus, TaskStatus
from testfleet.domain.records import WriteBatch


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
