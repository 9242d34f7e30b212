"""Dead or slow: a closed socket is lost at the disconnect grace, silence at the
heartbeat timeout, and a reconnect within the grace keeps the work (issue 12).

Pure state on a fake clock (``CoordinatorState``, no sockets).
"""

from __future__ import annotations

from test_coordinator_state import SETTINGS, Harness, assigned, caps, result, sent, spec

from testfleet.coordinator.events import Tick, WorkerDisconnected, WorkerFrame
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.state import CoordinatorState
from testfleet.domain.enums import (
    AttemptStatus,
    ErrorClass,
    ResultDisposition,
    TaskStatus,
    WorkerStatus,
)
from testfleet.domain.records import RecoveredState, WorkerRecord
from testfleet.protocol.messages import (
    Accept,
    AttemptResult,
    Heartbeat,
    Result,
    Welcome,
    WorkerLoad,
)
from testfleet.testing import FakeClock

GRACE = SETTINGS.disconnect_grace_seconds
TIMEOUT = SETTINGS.heartbeat_timeout_seconds


def running_on_w1(h: Harness) -> int:
    """Submit task "a", connect w1 (connection 1) and let it start the attempt."""
    h.submit(spec("a"))
    _, attempt_id = assigned(h.connect(1, "w1"))["a"]
    h.turn(WorkerFrame(1, Accept(attempt_ids=[attempt_id])))
    return attempt_id


def lost_attempts(h: Harness) -> list[int]:
    """Attempts closed as lost so far (records are shared between turns: each once)."""
    return sorted(
        {
            a.attempt_id
            for e in h.effects
            for a in e.batch.attempts
            if a.status is AttemptStatus.LOST
        }
    )


def test_the_default_grace_is_short_and_below_the_timeout() -> None:
    defaults = CoordinatorSettings()
    assert 0 < defaults.disconnect_grace_seconds <= 5.0
    assert defaults.disconnect_grace_seconds < defaults.heartbeat_timeout_seconds


def test_a_closed_socket_is_lost_at_the_grace_not_the_timeout() -> None:
    assert GRACE < TIMEOUT
    h = Harness()
    attempt_id = running_on_w1(h)
    h.turn(WorkerDisconnected(1))
    h.clock.advance(GRACE - 0.1)
    h.turn(Tick())
    assert lost_attempts(h) == []
    assert h.state.workers["w1"].record.status is WorkerStatus.DISCONNECTED
    h.clock.advance(0.1)
    effects = h.turn(Tick())
    assert lost_attempts(h) == [attempt_id]
    assert h.state.workers["w1"].record.status is WorkerStatus.LOST
    lost = next(a for a in effects.batch.attempts if a.attempt_id == attempt_id)
    assert lost.error_class is ErrorClass.WORKER_LOST
    assert lost.error_message is not None
    assert "connection closed" in lost.error_message
    # Requeued at once: another worker picks it up.
    assert assigned(h.connect(2, "w2"))["a"][0] == 2


def test_the_grace_counts_from_the_close_not_the_last_heartbeat() -> None:
    h = Harness()
    running_on_w1(h)
    h.turn(WorkerFrame(1, Heartbeat(load=WorkerLoad())))
    h.clock.advance(GRACE - 1)  # quiet for a while, but the socket is open
    h.turn(WorkerDisconnected(1))
    h.clock.advance(GRACE - 0.5)  # more than the grace since the last frame
    h.turn(Tick())
    assert lost_attempts(h) == []
    h.clock.advance(0.5)
    h.turn(Tick())
    assert len(lost_attempts(h)) == 1


def test_a_silent_worker_with_an_open_socket_is_lost_at_the_timeout() -> None:
    h = Harness()
    attempt_id = running_on_w1(h)
    h.clock.advance(GRACE + 1)  # well past the grace: no close was seen
    h.turn(Tick())
    assert lost_attempts(h) == []
    h.clock.advance(TIMEOUT - GRACE - 1)  # exactly the timeout: not yet
    h.turn(Tick())
    assert lost_attempts(h) == []
    h.clock.advance(0.1)
    effects = h.turn(Tick())
    assert lost_attempts(h) == [attempt_id]
    lost = next(a for a in effects.batch.attempts if a.attempt_id == attempt_id)
    assert lost.error_message is not None
    assert "no heartbeat" in lost.error_message
    # Its socket is closed for it.
    assert [c for c, _ in effects.closes] == [1]


def test_a_reconnect_within_the_grace_keeps_the_attempt() -> None:
    h = Harness()
    attempt_id = running_on_w1(h)
    h.turn(WorkerDisconnected(1))
    h.clock.advance(GRACE - 0.5)
    welcome = sent(h.connect(2, "w1", running=[attempt_id]), Welcome)[0][1]
    assert welcome.keep_attempts == [attempt_id]
    h.clock.advance(GRACE)  # past the old close's grace: it no longer counts
    h.turn(Tick())
    assert lost_attempts(h) == []
    assert h.task("a").status is TaskStatus.RUNNING
    assert h.task("a").attempts == 1


def test_a_second_close_starts_a_fresh_grace() -> None:
    h = Harness()
    attempt_id = running_on_w1(h)
    h.turn(WorkerDisconnected(1))
    h.clock.advance(GRACE - 0.5)
    h.connect(2, "w1", running=[attempt_id])
    h.clock.advance(0.4)
    h.turn(WorkerDisconnected(2))
    h.clock.advance(GRACE - 0.5)
    h.turn(Tick())
    assert lost_attempts(h) == []
    h.clock.advance(0.5)
    h.turn(Tick())
    assert lost_attempts(h) == [attempt_id]


def test_workers_known_only_from_the_store_get_the_heartbeat_timeout() -> None:
    """After a coordinator restart no close was seen: the workers reconnect at
    their own pace, with the full timeout to keep their work."""
    clock = FakeClock()
    record = WorkerRecord(
        worker_id="w1",
        hostname="host",
        registration_time=0.0,
        last_heartbeat=0.0,
        status=WorkerStatus.CONNECTED,
        capabilities=caps(),
        slots=1,
    )
    state = CoordinatorState(SETTINGS, clock.now(), RecoveredState([], [], [record], 1))
    clock.advance(GRACE + 1)
    state.handle(Tick(), clock.now())
    assert state.workers["w1"].record.status is WorkerStatus.DISCONNECTED
    clock.advance(TIMEOUT)
    state.handle(Tick(), clock.now())
    assert state.workers["w1"].record.status is WorkerStatus.LOST


def test_a_worker_back_after_being_lost_has_stale_work_cancelled_and_late_results_uncounted() -> (
    None
):
    h = Harness()
    attempt_id = running_on_w1(h)
    h.turn(WorkerDisconnected(1))
    h.clock.advance(GRACE)
    h.turn(Tick())
    # The task runs again elsewhere.
    _, retry = assigned(h.connect(2, "w2"))["a"]
    # w1 comes back, still running its old attempt: it is told to stop it.
    welcome = sent(h.connect(3, "w1", running=[attempt_id]), Welcome)[0][1]
    assert welcome.cancel_attempts == [attempt_id]
    assert welcome.keep_attempts == []
    # Its late result is history only; the retry's result is the outcome.
    late = AttemptResult(attempt_id=attempt_id, result=result("a", "w1"))
    effects = h.turn(WorkerFrame(3, Result(results=[late])))
    assert [(r.attempt_id, r.disposition) for r in effects.batch.results] == [
        (attempt_id, ResultDisposition.LATE)
    ]
    assert h.task("a").current_attempt_id == retry
    effects = h.turn(
        WorkerFrame(2, Result(results=[AttemptResult(attempt_id=retry, result=result("a", "w2"))]))
    )
    assert [(r.attempt_id, r.disposition) for r in effects.batch.results] == [
        (retry, ResultDisposition.OUTCOME)
    ]
    assert not h.has_task("a")


def test_a_poison_task_fails_as_lost_too_often_after_the_cap() -> None:
    """A task whose workers all die (closed sockets) is stopped after
    max_lost_attempts + 1 lost attempts, naming how many it took down; the
    other tasks go on."""
    h = Harness()
    h.submit(spec("poison"))
    final = None
    for n in range(SETTINGS.max_lost_attempts + 1):
        connection = 10 + n
        placed = assigned(h.connect(connection, f"w{n}"))
        assert "poison" in placed
        h.turn(WorkerFrame(connection, Accept(attempt_ids=[placed["poison"][1]])))
        h.turn(WorkerDisconnected(connection))  # the task killed its worker
        h.clock.advance(GRACE)
        effects = h.turn(Tick())
        finals = [t for t in effects.batch.tasks if t.task_id == "poison"]
        final = finals[-1] if finals else final
    assert final is not None
    assert final.status is TaskStatus.FAILED
    assert final.error_class is ErrorClass.LOST_TOO_OFTEN
    assert final.error_message is not None
    assert f"{SETTINGS.max_lost_attempts + 1} attempts lost their workers" in final.error_message
    assert not h.has_task("poison")
    # A healthy task is not held back by it.
    h.submit(spec("ok"))
    assert "ok" in assigned(h.connect(99, "w-healthy"))


def test_a_task_rejected_past_the_cap_keeps_its_own_error_class() -> None:
    """Only lost workers make a poison task; other infrastructure faults are
    reported as what they were."""
    from testfleet.protocol.messages import Reject

    h = Harness()
    h.submit(spec("a"))
    placed = assigned(h.connect(1, "w1"))
    final = None
    for _ in range(SETTINGS.max_lost_attempts + 1):
        effects = h.turn(WorkerFrame(1, Reject(attempt_id=placed["a"][1], reason="no")))
        placed = assigned(effects) or placed
        finals = [t for t in effects.batch.tasks if t.task_id == "a"]
        final = finals[-1] if finals else final
    assert final is not None
    assert final.status is TaskStatus.FAILED
    assert final.error_class is ErrorClass.INFRASTRUCTURE
