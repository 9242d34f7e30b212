"""Speculative copies of stragglers in the coordinator state: when a copy starts, which
result counts, what is cancelled, and what is never copied. Fake clock, real scheduler."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from test_coordinator_state import SETTINGS, Harness, assigned, result, sent, spec
from test_metrics import scrape

from testfleet.coordinator.events import CancelTasks, Tick, WorkerDisconnected, WorkerFrame
from testfleet.coordinator.metrics import Metrics
from testfleet.coordinator.speculation import (
    DurationHistory,
    SpeculationEvent,
    estimate_seconds,
    pick_worker,
    straggling_after,
    work_key,
)
from testfleet.coordinator.state_view import StateView
from testfleet.domain.enums import (
    AttemptStatus,
    HardwareKind,
    ResultDisposition,
    ResultStatus,
    TaskType,
)
from testfleet.domain.task import Requirements
from testfleet.protocol.messages import Accept, AttemptResult, Cancel, Result
from testfleet.scheduling.view import WorkerView

from test_state_fallbacks import gpu_caps  # isort: skip

#: Stragglers are tens of seconds late; workers must outlive that without heartbeats.
PATIENT = replace(SETTINGS, heartbeat_timeout_seconds=1e6, timeout_grace_seconds=2.0)


def started(h: Harness, task_spec: Any) -> tuple[int, int]:
    """Submit ``task_spec`` with workers w1 (conn 1) and w2 (conn 2) connected, w1
    first; it lands on w1 and runs. Returns (connection, attempt_id)."""
    h.connect(1, "w1")
    h.submit(task_spec)
    connection, attempt_id = assigned(h.effects[-1])[task_spec.task_id]
    h.turn(WorkerFrame(connection, Accept(attempt_ids=[attempt_id])))
    h.connect(2, "w2")
    return connection, attempt_id


def report(h: Harness, connection: int, attempt_id: int, task_id: str, worker: str) -> Any:
    item = AttemptResult(attempt_id=attempt_id, result=result(task_id, worker))
    return h.turn(WorkerFrame(connection, Result(results=[item])))


def copies(h: Harness) -> dict[SpeculationEvent, int]:
    return StateView(h.state).speculation_counts()


def test_a_straggler_gets_a_copy_whose_first_result_counts_and_the_original_is_cancelled() -> None:
    h = Harness(PATIENT)
    connection, original = started(h, spec("slow", expected_seconds=10.0))
    # Default factor 2, minimum 30 s: a straggler after max(20, 40) = 40 s.
    h.clock.advance(39.0)
    assert not assigned(h.turn(Tick()))
    h.clock.advance(1.0)
    effects = h.turn(Tick())
    copy_connection, copy_id = assigned(effects)["slow"]
    assert copy_connection == 2  # the idle worker, never the straggler's own
    copy_row = next(a for a in effects.batch.attempts if a.attempt_id == copy_id)
    assert copy_row.speculative
    assert copy_row.attempt == 2
    assert copies(h)[SpeculationEvent.STARTED] == 1

    h.turn(WorkerFrame(2, Accept(attempt_ids=[copy_id])))
    h.clock.advance(5.0)
    effects = report(h, 2, copy_id, "slow", "w2")
    assert not h.has_task("slow")
    finished = next(t for t in effects.batch.tasks if t.task_id == "slow")
    assert finished.status.value == "completed"
    assert finished.worker_id == "w2"
    assert finished.current_attempt_id == copy_id
    assert [(r.attempt_id, r.counted) for r in effects.batch.results] == [(copy_id, True)]
    cancelled = next(a for a in effects.batch.attempts if a.attempt_id == original)
    assert cancelled.status is AttemptStatus.CANCELLED
    assert (1, Cancel(attempt_ids=[original], reason="cancelled")) in sent(effects, Cancel)
    assert copies(h) == {
        SpeculationEvent.STARTED: 1,
        SpeculationEvent.WON: 1,
        SpeculationEvent.CANCELLED: 1,
    }

    # The straggler's own result arrives after all: kept in history, never counted.
    effects = report(h, connection, original, "slow", "w1")
    assert [(r.attempt_id, r.disposition) for r in effects.batch.results] == [
        (original, ResultDisposition.LATE)
    ]


def test_when_the_original_reports_first_the_copy_is_cancelled() -> None:
    h = Harness(PATIENT)
    connection, original = started(h, spec("slow", expected_seconds=10.0))
    h.clock.advance(40.0)
    copy_id = assigned(h.turn(Tick()))["slow"][1]
    effects = report(h, connection, original, "slow", "w1")
    assert [(r.attempt_id, r.counted) for r in effects.batch.results] == [(original, True)]
    loser = next(a for a in effects.batch.attempts if a.attempt_id == copy_id)
    assert loser.status is AttemptStatus.CANCELLED
    assert (2, Cancel(attempt_ids=[copy_id], reason="cancelled")) in sent(effects, Cancel)
    assert copies(h)[SpeculationEvent.WON] == 0
    assert copies(h)[SpeculationEvent.CANCELLED] == 1


def test_a_command_is_not_copied_unless_it_says_it_is_idempotent() -> None:
    argv = {"argv": ["sleep", "100"]}
    h = Harness(PATIENT)
    started(h, spec("cmd", type="command", config=argv, expected_seconds=10.0))
    h.clock.advance(1000.0)
    assert not assigned(h.turn(Tick()))

    h = Harness(PATIENT)
    started(h, spec("cmd", type="command", config=argv, expected_seconds=10.0, idempotent=True))
    h.clock.advance(40.0)
    assert assigned(h.turn(Tick()))["cmd"][0] == 2


def test_no_copy_while_queued_work_could_use_the_idle_worker() -> None:
    h = Harness(PATIENT)
    started(h, spec("slow", expected_seconds=10.0))
    h.state.registry.workers["w2"].draining = True  # hold w2 back while we queue work
    h.submit(spec("waiting"))
    h.state.registry.workers["w2"].draining = False
    h.clock.advance(40.0)
    effects = h.turn(Tick())
    # The queued task takes w2; the straggler waits for a worker nobody else needs.
    assert set(assigned(effects)) == {"waiting"}


def test_the_estimate_comes_from_past_runs_of_the_same_work_when_no_hint_is_given() -> None:
    h = Harness(PATIENT)
    h.connect(1, "w1")
    same = {"duration_seconds": 1.0}
    h.submit(spec("first", config=same))
    connection, attempt_id = assigned(h.effects[-1])["first"]
    h.turn(WorkerFrame(connection, Accept(attempt_ids=[attempt_id])))
    report(h, connection, attempt_id, "first", "w1")  # ran 0.5 s (the result says)
    h.submit(spec("second", config=same))
    connection, attempt_id = assigned(h.effects[-1])["second"]
    h.turn(WorkerFrame(connection, Accept(attempt_ids=[attempt_id])))
    h.connect(2, "w2")
    h.clock.advance(30.4)
    assert not assigned(h.turn(Tick()))
    h.clock.advance(0.2)  # past 0.5 + 30 s
    assert assigned(h.turn(Tick()))["second"][0] == 2


def test_switched_off_in_the_settings_nothing_is_copied() -> None:
    h = Harness(replace(PATIENT, speculation_enabled=False))
    started(h, spec("slow", expected_seconds=10.0))
    h.clock.advance(1000.0)
    assert not assigned(h.turn(Tick()))


def test_completions_are_timed_only_while_speculation_is_on() -> None:
    """The run-time history feeds the straggler estimate alone, which nothing reads
    while speculation is off: it is kept only while it is on."""
    for enabled in (True, False):
        h = Harness(replace(PATIENT, speculation_enabled=enabled))
        connection, attempt_id = started(h, spec("done"))
        h.clock.advance(4.0)
        report(h, connection, attempt_id, "done", "w1")
        key = work_key(spec("done"))
        kept = h.state.speculation.history.median(key)
        assert (kept is not None) is enabled


def test_if_the_stragglers_worker_is_lost_the_copy_carries_on_and_counts() -> None:
    h = Harness(replace(PATIENT, disconnect_grace_seconds=1.0))
    _, original = started(h, spec("slow", expected_seconds=10.0))
    h.clock.advance(40.0)
    copy_id = assigned(h.turn(Tick()))["slow"][1]
    h.turn(WorkerDisconnected(1))
    h.clock.advance(2.0)
    effects = h.turn(Tick())
    lost = next(a for a in effects.batch.attempts if a.attempt_id == original)
    assert lost.status is AttemptStatus.LOST
    task = h.task("slow")
    assert task.current_attempt_id == copy_id
    assert not assigned(effects)  # not requeued: the copy runs it
    effects = report(h, 2, copy_id, "slow", "w2")
    assert [(r.attempt_id, r.counted) for r in effects.batch.results] == [(copy_id, True)]


def test_cancelling_the_task_cancels_both_attempts() -> None:
    h = Harness(PATIENT)
    _, original = started(h, spec("slow", expected_seconds=10.0))
    h.clock.advance(40.0)
    copy_id = assigned(h.turn(Tick()))["slow"][1]

    class Reply:
        def resolve(self, value: object) -> None:
            pass

    effects = h.turn(CancelTasks(["slow"], Reply()))
    stopped = {(c, m.attempt_ids[0]) for c, m in sent(effects, Cancel)}
    assert stopped == {(1, original), (2, copy_id)}
    assert not h.has_task("slow")


def test_a_failed_first_result_counts_too_and_is_retried_as_the_policy_says() -> None:
    h = Harness(PATIENT)
    connection, original = started(h, spec("slow", expected_seconds=10.0))
    h.clock.advance(40.0)
    copy_id = assigned(h.turn(Tick()))["slow"][1]
    item = AttemptResult(attempt_id=copy_id, result=result("slow", "w2", ResultStatus.FAILED))
    effects = h.turn(WorkerFrame(2, Result(results=[item])))
    # max_retries is 0: the copy did not spend a retry, its failure is the one try.
    assert not h.has_task("slow")
    assert [(r.attempt_id, r.counted) for r in effects.batch.results] == [(copy_id, True)]
    assert connection == 1
    assert original in {a.attempt_id for a in effects.batch.attempts}  # cancelled with it


def test_the_counters_are_scraped_as_testfleet_speculative_copies_total() -> None:
    h = Harness(PATIENT)
    connection, original = started(h, spec("slow", expected_seconds=10.0))
    h.clock.advance(40.0)
    h.turn(Tick())
    report(h, connection, original, "slow", "w1")
    samples = scrape(Metrics(h.clock, StateView(h.state), lambda: 0))
    name = "testfleet_speculative_copies_total"
    assert samples[(name, (("event", "started"),))] == 1
    assert samples[(name, (("event", "won"),))] == 0
    assert samples[(name, (("event", "cancelled"),))] == 1


# --- the pure parts ---------------------------------------------------------------


def test_straggling_after_takes_the_later_of_the_factor_and_the_minimum() -> None:
    assert straggling_after(10.0, 2.0, 30.0) == 40.0
    assert straggling_after(100.0, 2.0, 30.0) == 200.0


def test_history_median_is_per_work_and_bounded() -> None:
    history = DurationHistory()
    a = spec("a", config={"duration_seconds": 1.0})
    b = spec("b", config={"duration_seconds": 2.0})
    assert estimate_seconds(a, history) is None
    for seconds in (1.0, 9.0, 3.0):
        history.add(work_key(a), seconds)
    assert estimate_seconds(a, history) == 3.0
    assert estimate_seconds(b, history) is None
    assert estimate_seconds(spec("c", expected_seconds=7.0), history) == 7.0
    for seconds in range(100):
        history.add(work_key(b), float(seconds))
    assert history.median(work_key(b)) == 89.5  # the last 20 runs only


def test_pick_worker_prefers_the_least_capable_idle_match_and_skips_the_rest() -> None:
    def view(worker_id: str, gpu: str | None, free: int = 1, accepting: bool = True) -> WorkerView:
        return WorkerView(worker_id, gpu_caps(gpu), free, accepting)

    workers = [
        view("gpu", "NVIDIA H100"),
        view("cpu", None),
        view("busy", None, free=0),
        view("draining", None, accepting=False),
        view("straggler", None),
    ]
    anything = Requirements()

    def picked(queued: dict[str, Any], taken: dict[str, int], running_on: str = "x") -> Any:
        chosen = pick_worker(TaskType.SIMULATED, anything, running_on, workers, queued, taken)
        return None if chosen is None else chosen.worker_id

    assert picked({}, {}, running_on="straggler") == "cpu"
    assert picked({}, {"cpu": 1}, running_on="straggler") == "gpu"
    assert picked({"k": (TaskType.SIMULATED, Requirements())}, {}) is None
    cuda = Requirements(hardware=[HardwareKind.CUDA])
    assert picked({"k": (TaskType.SIMULATED, cuda)}, {}) == "cpu"  # GPU work may have the GPU
