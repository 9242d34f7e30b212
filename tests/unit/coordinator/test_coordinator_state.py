"""The coordinator's state machine, driven event by event with a fake clock.

No sockets, no store: effects are inspected directly. The real (pure)
scheduler runs inside, as it does in production.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from testfleet.coordinator.events import (
    Accepted,
    CancelOutcome,
    CancelTasks,
    DrainWorker,
    RefusalReason,
    Refused,
    SubmitTasks,
    Tick,
    UndrainWorker,
    WorkerConnected,
    WorkerDisconnected,
    WorkerFrame,
)
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.state import CoordinatorState
from testfleet.coordinator.turn_output import Effects
from testfleet.domain.enums import (
    AttemptStatus,
    ErrorClass,
    HardwareKind,
    ResultDisposition,
    ResultStatus,
    TaskStatus,
    TaskType,
    WorkerStatus,
)
from testfleet.domain.hardware import GpuInfo, WorkerCapabilities
from testfleet.domain.records import AttemptRecord, RecoveredState, TaskRecord, WorkerRecord
from testfleet.domain.result import SimulationStatus, TaskError, TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Ack,
    Assign,
    AttemptResult,
    Bye,
    Cancel,
    Drain,
    Error,
    Heartbeat,
    Hello,
    ProtocolErrorCode,
    Reject,
    Result,
    Welcome,
)
from testfleet.testing import FakeClock

SETTINGS = CoordinatorSettings(
    heartbeat_interval_seconds=1.0,
    heartbeat_timeout_seconds=5.0,
    timeout_grace_seconds=2.0,
    max_lost_attempts=2,
)


@dataclass
class Answer:
    values: list[object] = field(default_factory=list)

    def resolve(self, value: object) -> None:
        self.values.append(value)


def caps(*, gpu: bool = False, tags: dict[str, str] | None = None) -> WorkerCapabilities:
    gpus = [
        GpuInfo(index=0, vendor="nvidia", name="NVIDIA H200", memory_gb=141, compute_capability=9.0)
    ]
    return WorkerCapabilities(
        hostname="host",
        os="Linux",
        python_version="3.11",
        memory_gb=64,
        gpus=gpus if gpu else [],
        hardware=[HardwareKind.CPU, HardwareKind.CUDA] if gpu else [HardwareKind.CPU],
        task_types=[TaskType.COMMAND, TaskType.SIMULATED, TaskType.TEST],
        tags=tags or {},
    )


def spec(task_id: str, **fields: Any) -> TaskSpec:
    document: dict[str, Any] = {"task_id": task_id, "type": "simulated", "config": {}}
    document.update(fields)
    return TaskSpec.model_validate(document)


def result(task_id: str, worker: str, status: ResultStatus = ResultStatus.COMPLETED) -> TaskResult:
    error = None
    if status is not ResultStatus.COMPLETED:
        error = TaskError(error_class=ErrorClass.TASK_FAILURE, message="exit code 1")
    return TaskResult(
        task_id=task_id,
        worker_id=worker,
        status=status,
        execution_time_seconds=0.5,
        simulation_status=SimulationStatus(is_simulated=True),
        error=error,
    )


class Harness:
    """A state plus a fake clock, and helpers to speak for workers and users."""

    def __init__(self, settings: CoordinatorSettings = SETTINGS) -> None:
        self.clock = FakeClock()
        self.state = CoordinatorState(settings, self.clock.now())
        self.effects: list[Effects] = []

    def turn(self, *events: Any) -> Effects:
        for event in events:
            self.state.handle(event, self.clock.now())
        self.state.schedule(self.clock.now())
        effects = self.state.take_effects()
        # As the loop does after committing the batch.
        for reply, value in effects.replies:
            reply.resolve(value)
        self.effects.append(effects)
        return effects

    def submit(self, *specs: TaskSpec) -> object:
        answer = Answer()
        self.turn(SubmitTasks(list(specs), answer))
        return answer.values[0]

    def connect(
        self,
        connection: int,
        worker_id: str,
        *,
        slots: int = 1,
        gpu: bool = False,
        session: str = "s" * 16,
        running: list[int] | None = None,
        tags: dict[str, str] | None = None,
    ) -> Effects:
        hello = Hello(
            protocol_version=PROTOCOL_VERSION,
            worker_id=worker_id,
            session_key=session,
            capabilities=caps(gpu=gpu, tags=tags),
            slots=slots,
            running_attempts=running or [],
        )
        return self.turn(WorkerConnected(connection, hello))

    def task(self, task_id: str) -> TaskRecord:
        """The open task ``task_id`` (a test that expects it gone uses :meth:`has_task`)."""
        return self.state.tasks[task_id]

    def has_task(self, task_id: str) -> bool:
        return task_id in self.state.tasks


def sent(effects: Effects, kind: type) -> list[tuple[int, Any]]:
    return [(c, m) for c, m in effects.sends if isinstance(m, kind)]


def assigned(effects: Effects) -> dict[str, tuple[int, int]]:
    """task_id -> (connection, attempt_id) for every assignment sent."""
    out = {}
    for connection, message in sent(effects, Assign):
        for a in message.assignments:
            out[a.task.task_id] = (connection, a.attempt_id)
    return out


def test_submit_queues_and_answers_after_effects() -> None:
    h = Harness()
    answer = h.submit(spec("a"), spec("b"))
    assert answer == Accepted(["a", "b"])
    batch = h.effects[-1].batch
    assert {t.task_id for t in batch.tasks} == {"a", "b"}
    assert all(t.status is TaskStatus.QUEUED for t in batch.tasks)


def test_duplicate_task_ids_refuse_the_whole_request() -> None:
    h = Harness()
    h.submit(spec("a"))
    refused = h.submit(spec("b"), spec("a"))
    assert isinstance(refused, Refused)
    assert refused.reason is RefusalReason.DUPLICATE_TASK_ID
    assert refused.ids == ["a"]
    assert "b" not in h.state.tasks  # nothing of the request was accepted
    again = h.submit(spec("c"), spec("c"))
    assert isinstance(again, Refused)
    assert again.ids == ["c"]


def test_full_lifecycle_assign_accept_result_ack() -> None:
    h = Harness()
    h.submit(spec("a"))
    effects = h.connect(1, "w1")
    welcome = sent(effects, Welcome)
    assert welcome
    assert welcome[0][0] == 1
    (connection, attempt_id) = assigned(effects)["a"]
    assert connection == 1
    assert h.task("a").status is TaskStatus.ASSIGNED

    h.clock.advance(0.1)
    h.turn(WorkerFrame(1, Accept(attempt_ids=[attempt_id])))
    task = h.task("a")
    assert task is not None
    assert task.status is TaskStatus.RUNNING
    assert task.start_time == h.clock.now()

    h.clock.advance(0.5)
    effects = h.turn(
        WorkerFrame(
            1, Result(results=[AttemptResult(attempt_id=attempt_id, result=result("a", "w1"))])
        )
    )
    assert not h.has_task("a")  # finished tasks leave memory
    finished = next(t for t in effects.batch.tasks if t.task_id == "a")
    assert finished.status is TaskStatus.COMPLETED
    assert finished.attempts == 1
    assert [r.counted for r in effects.batch.results] == [True]
    assert [m.attempt_ids for _, m in sent(effects, Ack)] == [[attempt_id]]
    attempt = next(a for a in effects.batch.attempts if a.attempt_id == attempt_id)
    assert attempt.status is AttemptStatus.COMPLETED
    assert attempt.execution_time_seconds == 0.5


def test_slots_limit_concurrent_assignments() -> None:
    h = Harness()
    h.submit(*[spec(f"t{i}") for i in range(5)])
    effects = h.connect(1, "w1", slots=2)
    assert sorted(assigned(effects)) == ["t0", "t1"]
    # One frame per worker per turn, however many assignments.
    assert len(sent(effects, Assign)) == 1


def test_priority_then_age_decides_order() -> None:
    h = Harness()
    h.submit(spec("low", priority=9))
    h.clock.advance(1)
    h.submit(spec("high", priority=1))
    h.clock.advance(1)
    h.submit(spec("high-later", priority=1))
    effects = h.connect(1, "w1", slots=1)
    assert list(assigned(effects)) == ["high"]


def test_failed_attempt_retries_per_policy_then_fails() -> None:
    h = Harness()
    h.submit(spec("a", retry_policy={"max_retries": 1, "retry_delay_seconds": 10}))
    effects = h.connect(1, "w1")
    _, first = assigned(effects)["a"]
    failed = AttemptResult(attempt_id=first, result=result("a", "w1", ResultStatus.FAILED))
    effects = h.turn(WorkerFrame(1, Result(results=[failed])))
    task = h.task("a")
    assert task is not None
    assert task.status is TaskStatus.QUEUED
    # Retried: kept, not the outcome, and recorded as what it is.
    assert effects.batch.results[0].disposition is ResultDisposition.RETRIED
    assert effects.batch.results[0].counted is False
    assert assigned(effects) == {}  # the retry delay holds it back

    h.clock.advance(9.9)
    assert assigned(h.turn(WorkerFrame(1, Heartbeat()), Tick())) == {}
    h.clock.advance(0.2)
    effects = h.turn(WorkerFrame(1, Heartbeat()), Tick())
    _, second = assigned(effects)["a"]
    assert second != first

    failed = AttemptResult(attempt_id=second, result=result("a", "w1", ResultStatus.FAILED))
    effects = h.turn(WorkerFrame(1, Result(results=[failed])))
    final = [t for t in effects.batch.tasks if t.task_id == "a"][-1]
    assert final.status is TaskStatus.FAILED
    assert final.attempts == 2
    assert final.error_class is ErrorClass.TASK_FAILURE
    assert effects.batch.results[0].disposition is ResultDisposition.OUTCOME
    assert effects.batch.results[0].counted is True


def test_lost_worker_requeues_and_late_result_is_history_only() -> None:
    h = Harness()
    h.submit(spec("a"))
    effects = h.connect(1, "w1")
    _, first = assigned(effects)["a"]
    h.turn(WorkerFrame(1, Accept(attempt_ids=[first])))
    h.connect(2, "w2")  # a second worker, idle
    # w2 keeps sending heartbeats; w1 goes silent.
    for _ in range(6):
        h.clock.advance(1)
        effects = h.turn(WorkerFrame(2, Heartbeat()), Tick())
        if assigned(effects):
            break
    assert h.state.workers["w1"].record.status is WorkerStatus.LOST
    connection, second = assigned(effects)["a"]
    assert connection == 2
    assert second != first
    lost = next(a for a in effects.batch.attempts if a.attempt_id == first)
    assert lost.status is AttemptStatus.LOST
    assert lost.error_class is ErrorClass.WORKER_LOST
    task = h.task("a")
    assert task is not None
    assert task.attempts == 2
    assert task.lost_attempts == 1

    # w2 finishes first; then w1's late result arrives after it reconnects.
    h.turn(
        WorkerFrame(2, Result(results=[AttemptResult(attempt_id=second, result=result("a", "w2"))]))
    )
    h.connect(3, "w1", session="t" * 16)
    late = AttemptResult(attempt_id=first, result=result("a", "w1", ResultStatus.FAILED))
    effects = h.turn(WorkerFrame(3, Result(results=[late])))
    assert [(r.attempt_id, r.disposition) for r in effects.batch.results] == [
        (first, ResultDisposition.LATE)
    ]
    assert effects.batch.tasks == []  # the outcome is untouched
    assert [m.attempt_ids for _, m in sent(effects, Ack)] == [[first]]


def test_lost_attempts_beyond_the_cap_fail_the_task() -> None:
    h = Harness()
    h.submit(spec("a"))
    for round_ in range(SETTINGS.max_lost_attempts + 1):
        h.connect(10 + round_, f"w{round_}")
        h.clock.advance(SETTINGS.heartbeat_timeout_seconds + 1)
        effects = h.turn(Tick())
    final = [t for t in effects.batch.tasks if t.task_id == "a"][-1]
    assert final.status is TaskStatus.FAILED
    assert final.error_class is ErrorClass.LOST_TOO_OFTEN
    assert final.error_message is not None
    assert f"stopped after {SETTINGS.max_lost_attempts + 1} attempts" in final.error_message
    assert final.attempts == SETTINGS.max_lost_attempts + 1


def test_disconnected_worker_that_reconnects_in_time_keeps_its_attempt() -> None:
    h = Harness()
    h.submit(spec("a"))
    _, attempt_id = assigned(h.connect(1, "w1"))["a"]
    h.turn(WorkerFrame(1, Accept(attempt_ids=[attempt_id])))
    h.turn(WorkerDisconnected(1))
    assert h.state.workers["w1"].record.status is WorkerStatus.DISCONNECTED
    h.clock.advance(3)
    effects = h.connect(2, "w1", running=[attempt_id])
    welcome = sent(effects, Welcome)[0][1]
    assert welcome.keep_attempts == [attempt_id]
    h.clock.advance(3)  # past the timeout counted from the first silence
    h.turn(Tick())
    task = h.task("a")
    assert task is not None
    assert task.status is TaskStatus.RUNNING
    assert task.current_attempt_id == attempt_id
    assert task.attempts == 1


def test_reconnect_without_the_attempt_requeues_it_and_cancels_unknown_ones() -> None:
    h = Harness()
    h.submit(spec("a"))
    _, attempt_id = assigned(h.connect(1, "w1"))["a"]
    h.turn(WorkerDisconnected(1))
    effects = h.connect(2, "w1", running=[999])
    welcome = sent(effects, Welcome)[0][1]
    assert welcome.keep_attempts == []
    assert welcome.cancel_attempts == [999]
    # The task went back to the queue and straight onto the reconnected worker.
    _, new_attempt = assigned(effects)["a"]
    assert new_attempt != attempt_id


def test_another_process_claiming_a_connected_id_is_refused() -> None:
    h = Harness()
    h.connect(1, "w1", session="a" * 16)
    effects = h.connect(2, "w1", session="b" * 16)
    assert len(effects.closes) == 1
    connection, error = effects.closes[0]
    assert connection == 2
    assert isinstance(error, Error)
    assert error.code is ProtocolErrorCode.WORKER_ID_IN_USE
    assert "w1" in error.message
    assert "--worker-id" in error.message
    assert h.state.workers["w1"].connection_id == 1  # the real one is untouched


def test_same_process_reconnecting_replaces_its_old_connection() -> None:
    h = Harness()
    h.connect(1, "w1")
    effects = h.connect(2, "w1")
    assert effects.closes == [(1, None)]
    assert h.state.workers["w1"].connection_id == 2
    h.turn(WorkerDisconnected(1))  # the old socket's close arrives late: ignored
    assert h.state.workers["w1"].record.status is WorkerStatus.CONNECTED


def test_unsupported_protocol_version_is_refused() -> None:
    h = Harness()
    hello = Hello(
        protocol_version=PROTOCOL_VERSION + 1,
        worker_id="w1",
        session_key="s" * 16,
        capabilities=caps(),
        slots=1,
    )
    effects = h.turn(WorkerConnected(1, hello))
    assert effects.closes[0][1] is not None
    assert effects.closes[0][1].code is ProtocolErrorCode.UNSUPPORTED_VERSION
    assert "w1" not in h.state.workers


def test_worker_sending_a_coordinator_message_is_disconnected() -> None:
    h = Harness()
    h.connect(1, "w1")
    effects = h.turn(WorkerFrame(1, Drain()))
    assert effects.closes
    assert effects.closes[0][1] is not None
    assert effects.closes[0][1].code is ProtocolErrorCode.INVALID_MESSAGE


def test_cuda_task_is_unschedulable_on_a_cpu_fleet_and_does_not_block_others() -> None:
    h = Harness()
    h.submit(spec("gpu", priority=0, requirements={"hardware": ["cuda"]}), spec("cpu"))
    effects = h.connect(1, "w1")
    assert list(assigned(effects)) == ["cpu"]
    task = h.task("gpu")
    assert task is not None
    assert task.unschedulable_reason is not None
    assert "cuda" in task.unschedulable_reason
    # A GPU worker joins: the reason clears and the task runs there.
    effects = h.connect(2, "gpu-box", gpu=True)
    assert assigned(effects)["gpu"][0] == 2
    assert h.task("gpu").unschedulable_reason is None


def test_an_unschedulable_reason_outlives_the_workers_it_was_about() -> None:
    # Issue 8: at shutdown the reason became "no workers are connected",
    # losing what the user must fix.
    h = Harness()
    h.submit(spec("before", requirements={"hardware": ["cuda"]}))
    assert h.task("before").unschedulable_reason == "no workers are connected"
    h.connect(1, "w1")
    fleet_reason = h.task("before").unschedulable_reason
    assert fleet_reason is not None
    assert "hardware: needs one of [cuda]" in fleet_reason
    h.turn(WorkerFrame(1, Bye()), WorkerDisconnected(1))
    assert h.task("before").unschedulable_reason == (
        f"{fleet_reason} (while workers were connected); no workers are connected now"
    )
    # A task that never met a worker has nothing older to say.
    h.submit(spec("after", requirements={"hardware": ["rocm"]}))
    assert h.task("after").unschedulable_reason == "no workers are connected"
    # When a worker is back, the reasons are about it again.
    h.connect(2, "w2", session="t" * 16)
    assert h.task("before").unschedulable_reason == fleet_reason


def test_best_fit_keeps_the_gpu_worker_free_for_gpu_work() -> None:
    h = Harness()
    h.connect(1, "gpu-box", gpu=True)
    h.connect(2, "cpu-box")
    effects = h.turn(SubmitTasks([spec("cpu-task")], Answer()))
    assert assigned(effects)["cpu-task"][0] == 2


def test_cancel_running_task_tells_the_worker_and_finishes_it() -> None:
    h = Harness()
    h.submit(spec("a"), spec("b"))
    effects = h.connect(1, "w1", slots=1)
    _, attempt_id = assigned(effects)["a"]
    answer = Answer()
    effects = h.turn(CancelTasks(["a"], answer))
    assert answer.values == [CancelOutcome(cancelled=["a"], already_finished=[], not_found=[])]
    assert [m.attempt_ids for _, m in sent(effects, Cancel)] == [[attempt_id]]
    assert [t.status for t in effects.batch.tasks if t.task_id == "a"] == [TaskStatus.CANCELLED]
    assert "b" in assigned(effects)  # the freed slot is used at once

    answer = Answer()
    h.turn(CancelTasks(["a", "zz"], answer))
    assert answer.values == [CancelOutcome(cancelled=[], already_finished=["a"], not_found=["zz"])]


def test_cancelling_a_running_and_a_queued_task_together_never_starts_the_queued_one() -> None:
    # The case: `testfleet cancel A B`, A running on the only slot and
    # B queued behind it. Cancelling A frees the slot; B must not get it.
    h = Harness()
    h.submit(spec("a"), spec("b"), spec("c"))
    effects = h.connect(1, "w1", slots=1)
    assert set(assigned(effects)) == {"a"}
    answer = Answer()
    effects = h.turn(CancelTasks(["a", "b"], answer))
    assert answer.values == [CancelOutcome(cancelled=["a", "b"], already_finished=[], not_found=[])]
    # The slot goes to c, which was not cancelled; b never had an attempt.
    assert set(assigned(effects)) == {"c"}
    assert all(a.task_id != "b" for e in h.effects for a in e.batch.attempts)
    cancelled = {t.task_id: t for t in effects.batch.tasks if t.status is TaskStatus.CANCELLED}
    assert set(cancelled) == {"a", "b"}
    assert cancelled["b"].attempts == 0


def test_a_cancel_naming_a_task_twice_cancels_it_once() -> None:
    h = Harness()
    h.submit(spec("a"))
    answer = Answer()
    h.turn(CancelTasks(["a", "a"], answer))
    assert answer.values == [CancelOutcome(cancelled=["a"], already_finished=[], not_found=[])]


def test_cancel_queued_task() -> None:
    h = Harness()
    h.submit(spec("a"))
    answer = Answer()
    h.turn(CancelTasks(["a"], answer))
    assert answer.values == [CancelOutcome(cancelled=["a"], already_finished=[], not_found=[])]
    effects = h.connect(1, "w1")
    assert assigned(effects) == {}


def test_drained_worker_gets_no_new_work() -> None:
    h = Harness()
    h.connect(1, "w1")
    answer = Answer()
    effects = h.turn(DrainWorker("w1", answer))
    assert answer.values == [Accepted(["w1"])]
    assert sent(effects, Drain)
    effects = h.turn(SubmitTasks([spec("a")], Answer()))
    assert assigned(effects) == {}
    task = h.task("a")
    # Draining workers still count as able: the task waits, it is not unschedulable.
    assert task is not None
    assert task.unschedulable_reason is None


def test_undrain_lets_a_drained_worker_take_work_again() -> None:
    h = Harness()
    h.connect(1, "w1")
    h.turn(DrainWorker("w1", Answer()))
    h.turn(SubmitTasks([spec("a")], Answer()))
    answer = Answer()
    effects = h.turn(UndrainWorker("w1", answer))
    assert answer.values == [Accepted(["w1"])]
    assert "a" in assigned(effects)  # the waiting task goes to it in the same turn
    assert [w.status for w in effects.batch.workers] == [WorkerStatus.CONNECTED]
    # Undraining a worker that is not draining changes nothing and is not an error.
    answer = Answer()
    effects = h.turn(UndrainWorker("w1", answer))
    assert answer.values == [Accepted(["w1"])]
    assert effects.batch.workers == []


def test_undrain_of_an_unknown_worker_is_refused() -> None:
    h = Harness()
    answer = Answer()
    h.turn(UndrainWorker("nobody", answer))
    refused = answer.values[0]
    assert isinstance(refused, Refused)
    assert refused.reason is RefusalReason.NOT_FOUND


def test_reject_requeues_as_an_infrastructure_fault() -> None:
    h = Harness()
    h.submit(spec("a"))
    _, attempt_id = assigned(h.connect(1, "w1"))["a"]
    h.connect(2, "w2")
    effects = h.turn(WorkerFrame(1, Reject(attempt_id=attempt_id, reason="no executor")))
    rejected = next(a for a in effects.batch.attempts if a.attempt_id == attempt_id)
    assert rejected.status is AttemptStatus.FAILED
    assert rejected.error_class is ErrorClass.INFRASTRUCTURE
    assert "no executor" in (rejected.error_message or "")
    assert assigned(effects)["a"][1] != attempt_id  # requeued as a new attempt
    assert h.task("a").lost_attempts == 1


def test_coordinator_deadline_times_out_a_silent_attempt() -> None:
    h = Harness()
    h.submit(spec("a", timeout_seconds=10))
    effects = h.connect(1, "w1")
    _, attempt_id = assigned(effects)["a"]
    for _ in range(13):
        h.clock.advance(1)
        effects = h.turn(WorkerFrame(1, Heartbeat()), Tick())
        if effects.batch.tasks:
            break
    final = [t for t in effects.batch.tasks if t.task_id == "a"][-1]
    assert final.status is TaskStatus.TIMED_OUT
    assert final.error_class is ErrorClass.TIMEOUT
    assert [m.attempt_ids for _, m in sent(effects, Cancel)] == [[attempt_id]]


def test_recovery_resumes_queued_and_keeps_attempts_for_reconnecting_workers() -> None:
    clock = FakeClock()
    now = clock.now()
    queued = TaskRecord(spec=spec("q"), status=TaskStatus.QUEUED, create_time=now, queued_at=now)
    running = TaskRecord(
        spec=spec("r"),
        status=TaskStatus.RUNNING,
        create_time=now,
        queued_at=now,
        worker_id="w1",
        attempts=1,
        current_attempt_id=7,
    )
    orphan = TaskRecord(
        spec=spec("o"),
        status=TaskStatus.RUNNING,
        create_time=now,
        queued_at=now,
        worker_id="w2",
        attempts=1,
        current_attempt_id=8,
    )
    workers = [
        WorkerRecord("w1", "h", now, now, WorkerStatus.CONNECTED, caps(), 2),
        WorkerRecord("w2", "h", now, now, WorkerStatus.CONNECTED, caps(), 2),
    ]
    attempts = [
        AttemptRecord(7, "r", "w1", 1, AttemptStatus.RUNNING, now),
        AttemptRecord(8, "o", "w2", 1, AttemptStatus.RUNNING, now),
    ]
    state = CoordinatorState(
        SETTINGS, now, RecoveredState([queued, running, orphan], attempts, workers, 9), {"done"}
    )
    assert state.next_attempt_id == 9
    assert {w.record.status for w in state.workers.values()} == {WorkerStatus.DISCONNECTED}
    h = Harness()
    h.clock, h.state = clock, state
    effects = h.connect(1, "w1", slots=3, running=[7])
    assert sent(effects, Welcome)[0][1].keep_attempts == [7]
    assert assigned(effects)["q"][1] == 9
    clock.advance(SETTINGS.heartbeat_timeout_seconds + 1)
    effects = h.turn(WorkerFrame(1, Heartbeat()), Tick())
    # w2 never came back: its attempt is lost and the task rescheduled on w1.
    assert assigned(effects)["o"][0] == 1
    assert h.task("r").current_attempt_id == 7
    refused = h.submit(spec("done"))  # ids of finished tasks stay taken
    assert isinstance(refused, Refused)
    assert refused.reason is RefusalReason.DUPLICATE_TASK_ID


def test_results_naming_nothing_issued_are_dropped_but_acknowledged() -> None:
    h = Harness()
    h.submit(spec("a"))
    _, attempt_id = assigned(h.connect(1, "w1"))["a"]
    h.connect(2, "w2")
    forged = [
        AttemptResult(attempt_id=attempt_id + 100, result=result("a", "w1")),  # never issued
        AttemptResult(attempt_id=attempt_id, result=result("ghost", "w1")),  # unknown task
    ]
    effects = h.turn(WorkerFrame(1, Result(results=forged)))
    assert effects.batch.results == []
    assert h.state.stray_results == 2
    assert [m.attempt_ids for _, m in sent(effects, Ack)] == [[attempt_id + 100, attempt_id]]
    # Another worker cannot report w1's open attempt.
    effects = h.turn(
        WorkerFrame(
            2, Result(results=[AttemptResult(attempt_id=attempt_id, result=result("a", "w2"))])
        )
    )
    assert effects.batch.results == []
    assert h.task("a").status is TaskStatus.ASSIGNED


def test_results_count_only_from_the_worker_the_attempt_was_given_to() -> None:
    """Issue 10: a worker cannot report, or put in history, an attempt it was never
    given: not while it is open (above) and not once it has closed."""
    h = Harness()
    h.submit(spec("a"), spec("b"))
    _, mine = assigned(h.connect(1, "w1"))["a"]
    _, theirs = assigned(h.connect(2, "w2"))["b"]

    # w1 finishes its own attempt: counted, the task's outcome.
    done = AttemptResult(attempt_id=mine, result=result("a", "w1"))
    effects = h.turn(WorkerFrame(1, Result(results=[done])))
    assert [(r.attempt_id, r.counted) for r in effects.batch.results] == [(mine, True)]

    # w2 now reports w1's closed attempt, and w2's own attempt under w1's task:
    # neither is counted or kept, and w2's real attempt is untouched.
    forged = [
        AttemptResult(attempt_id=mine, result=result("a", "w2", ResultStatus.FAILED)),
        AttemptResult(attempt_id=theirs, result=result("a", "w2")),
    ]
    before = h.state.stray_results
    effects = h.turn(WorkerFrame(2, Result(results=forged)))
    assert effects.batch.results == []
    assert effects.batch.tasks == []
    assert h.state.stray_results == before + 2
    # Acknowledged all the same: the worker must not resend them forever.
    assert [m.attempt_ids for _, m in sent(effects, Ack)] == [[mine, theirs]]
    assert h.task("b").current_attempt_id == theirs
    assert h.task("b").status is TaskStatus.ASSIGNED
    assert not h.has_task("a")  # still completed, by w1's result

    # w1 sending its own result again (a lost ack) is kept as late, never counted.
    effects = h.turn(WorkerFrame(1, Result(results=[done])))
    assert [(r.attempt_id, r.disposition, r.counted) for r in effects.batch.results] == [
        (mine, ResultDisposition.LATE, False)
    ]


def test_heartbeats_are_written_at_most_once_per_interval_but_always_keep_a_worker_alive() -> None:
    h = Harness()
    h.connect(1, "w1")
    written = 0
    for _ in range(40):  # 40 heartbeats, 0.5 s apart: 20 s
        h.clock.advance(0.5)
        effects = h.turn(WorkerFrame(1, Heartbeat()), Tick())
        written += len(effects.batch.workers)
    assert written == 2  # every 10 s, not every heartbeat
    assert h.state.workers["w1"].record.status is WorkerStatus.CONNECTED


def test_a_worker_that_said_bye_gets_no_new_work_and_its_handed_back_attempt_runs_elsewhere() -> (
    None
):
    # Issue 12, graceful worker shutdown: bye first, then the unfinished attempts
    # come back cancelled and are requeued at once, not after the heartbeat timeout.
    h = Harness()
    h.connect(1, "w1", slots=2)
    effects = h.turn(SubmitTasks([spec("a")], Answer()))
    connection, attempt_id = assigned(effects)["a"]
    assert connection == 1
    h.turn(WorkerFrame(1, Bye(reason="worker stopping")))
    effects = h.turn(SubmitTasks([spec("b")], Answer()))
    assert assigned(effects) == {}  # w1 has a free slot, but it is leaving
    assert h.task("b").status is TaskStatus.QUEUED
    h.connect(2, "w2", slots=2, session="t" * 16)
    cancelled = TaskResult(
        task_id="a",
        worker_id="w1",
        status=ResultStatus.CANCELLED,
        execution_time_seconds=1.0,
        simulation_status=SimulationStatus(is_simulated=True),
        error=TaskError(error_class=ErrorClass.CANCELLED, message="cancelled"),
    )
    effects = h.turn(
        WorkerFrame(1, Result(results=[AttemptResult(attempt_id=attempt_id, result=cancelled)]))
    )
    assert assigned(effects)["a"][0] == 2  # no clock moved: handed back, rerun at once
    h.turn(WorkerDisconnected(1))
    assert h.state.workers["w1"].record.status is WorkerStatus.LEFT
