"""The per-submitter quota on the real coordinator state (``--max-queued-per-submitter``).

The check is in the state's submit step, the one writer: these tests drive
:class:`CoordinatorState` through its events on a fake clock, as the loop
does. The API's 429 is tested in ``test_api_quota.py``.
"""

from __future__ import annotations

from dataclasses import replace

from test_coordinator_state import SETTINGS, Answer, Harness, assigned, result, spec

from testfleet.coordinator.events import (
    Accepted,
    CancelTasks,
    RefusalReason,
    Refused,
    SubmitTasks,
    WorkerFrame,
)
from testfleet.coordinator.state import CoordinatorState
from testfleet.coordinator.submitter_quota import QUOTA_FLAG, SubmitterQuota
from testfleet.domain.enums import TaskStatus
from testfleet.domain.records import RecoveredState, TaskRecord
from testfleet.protocol.messages import Accept, AttemptResult, Result

LIMIT = 3
QUOTA = replace(SETTINGS, max_queued_per_submitter=LIMIT)


def submit(h: Harness, submitter: str | None, *task_ids: str) -> object:
    answer = Answer()
    h.turn(SubmitTasks([spec(t) for t in task_ids], answer, submitter))
    return answer.values[0]


def test_a_submission_past_the_limit_is_refused_whole_naming_count_limit_and_flag() -> None:
    h = Harness(QUOTA)
    assert submit(h, "tok-a", "a1", "a2") == Accepted(["a1", "a2"])
    refused = submit(h, "tok-a", "a3", "a4")
    assert isinstance(refused, Refused)
    assert refused.reason is RefusalReason.QUOTA_EXCEEDED
    assert "it has 2 queued, assigned or running" in refused.message
    assert "the limit is 3" in refused.message
    assert QUOTA_FLAG in refused.message
    assert not h.has_task("a3")
    assert not h.has_task("a4")  # nothing of the request was accepted
    assert submit(h, "tok-a", "a3") == Accepted(["a3"])  # up to the limit exactly
    assert isinstance(submit(h, "tok-a", "a4"), Refused)


def test_each_token_has_its_own_quota_and_tasks_without_one_are_not_limited() -> None:
    h = Harness(QUOTA)
    assert isinstance(submit(h, "tok-a", "a1", "a2", "a3"), Accepted)
    assert isinstance(submit(h, "tok-b", "b1", "b2", "b3"), Accepted)
    assert isinstance(submit(h, None, *[f"n{i}" for i in range(10)]), Accepted)


def test_two_submissions_in_one_turn_cannot_both_slip_under_the_limit() -> None:
    h = Harness(QUOTA)
    first, second = Answer(), Answer()
    h.turn(
        SubmitTasks([spec("a1"), spec("a2")], first, "tok-a"),
        SubmitTasks([spec("a3"), spec("a4")], second, "tok-a"),
    )
    assert first.values == [Accepted(["a1", "a2"])]
    assert isinstance(second.values[0], Refused)


def test_running_tasks_count_until_they_finish_and_cancelled_ones_free_their_place() -> None:
    h = Harness(QUOTA)
    submit(h, "tok-a", "a1", "a2", "a3")
    effects = h.connect(1, "w1", slots=1)
    (_, attempt_id) = assigned(effects)["a1"]
    h.turn(WorkerFrame(1, Accept(attempt_ids=[attempt_id])))
    assert h.task("a1").status is TaskStatus.RUNNING
    assert isinstance(submit(h, "tok-a", "a4"), Refused)  # running still counts
    h.turn(
        WorkerFrame(
            1, Result(results=[AttemptResult(attempt_id=attempt_id, result=result("a1", "w1"))])
        )
    )
    assert submit(h, "tok-a", "a4") == Accepted(["a4"])
    assert isinstance(submit(h, "tok-a", "a5"), Refused)
    h.turn(CancelTasks(["a4"], Answer()))
    assert submit(h, "tok-a", "a5") == Accepted(["a5"])
    assert h.state.quota.held("tok-a") == LIMIT


def test_open_tasks_recovered_at_start_up_count() -> None:
    h = Harness(QUOTA)
    recovered = [
        TaskRecord(spec=spec(t), status=TaskStatus.QUEUED, create_time=0.0, queued_at=0.0)
        for t in ("r1", "r2")
    ]
    for task in recovered:
        task.submitted_by = "tok-a"
    h.state = CoordinatorState(QUOTA, h.clock.now(), RecoveredState(recovered, [], [], 1))
    assert h.state.quota.held("tok-a") == 2
    assert isinstance(submit(h, "tok-a", "a1", "a2"), Refused)
    assert submit(h, "tok-a", "a1") == Accepted(["a1"])


def test_no_limit_by_default() -> None:
    h = Harness()
    assert isinstance(submit(h, "tok-a", *[f"a{i}" for i in range(100)]), Accepted)
    assert h.state.quota.held("tok-a") == 100


def test_the_count_never_goes_below_zero_or_keeps_idle_submitters() -> None:
    quota = SubmitterQuota(1)
    quota.add("tok-a")
    quota.release("tok-a")
    quota.release("tok-a")
    quota.release(None)
    assert quota.held("tok-a") == 0
    assert quota.refusal("tok-a", 1) is None
    assert quota.refusal("tok-a", 2) is not None
    assert len(quota) == 0  # idle submitters are forgotten
