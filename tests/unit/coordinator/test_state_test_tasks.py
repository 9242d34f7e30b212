"""Test tasks in the coordinator's state: each test recorded once per task,
whether it arrives streamed or in the result, and a retried attempt told
which tests are already recorded (a worker lost mid-chunk loses only its
unfinished tests)."""

from __future__ import annotations

from typing import Any

from test_coordinator_state import Harness, assigned, sent

from testfleet.coordinator.events import Tick, WorkerFrame
from testfleet.domain.enums import ErrorClass, ResultStatus, TaskStatus, WorkerStatus
from testfleet.domain.pytest_tasks import (
    PhaseReport,
    ReportOutcome,
    TestChunkOutcome,
    TestLocation,
    TestOutcome,
    TestPhase,
    TestRecord,
)
from testfleet.domain.records import RecoveredState, TaskRecord
from testfleet.domain.result import SimulationStatus, TaskError, TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.protocol.messages import (
    Accept,
    Ack,
    Assign,
    AttemptResult,
    Heartbeat,
    Result,
    TestReports,
)

NODES = ["tests/test_a.py::test_1", "tests/test_a.py::test_2", "tests/test_b.py::test_3"]


def chunk_spec(task_id: str = "run1.r0.00000") -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "task_id": task_id,
            "type": "test",
            "config": {
                "run_id": "run1",
                "project": {"path": "/srv/project"},
                "node_ids": NODES,
                "rerun": 0,
            },
        }
    )


def record(nodeid: str, outcome: ReportOutcome = ReportOutcome.PASSED) -> TestRecord:
    return TestRecord(
        nodeid=nodeid,
        location=TestLocation(path=nodeid.split("::")[0], lineno=1, domain=nodeid.split("::")[1]),
        phases=[
            PhaseReport(when=TestPhase.SETUP, outcome=ReportOutcome.PASSED, duration=0.01),
            PhaseReport(when=TestPhase.CALL, outcome=outcome, duration=0.5),
            PhaseReport(when=TestPhase.TEARDOWN, outcome=ReportOutcome.PASSED, duration=0.01),
        ],
    )


def chunk_result(
    worker: str, records: list[TestRecord], *, status: ResultStatus = ResultStatus.COMPLETED
) -> TaskResult:
    outcome = TestChunkOutcome(run_id="run1", tests=records)
    error = None
    if status is not ResultStatus.COMPLETED:
        error = TaskError(error_class=ErrorClass.TIMEOUT, message="timed out")
    return TaskResult(
        task_id="run1.r0.00000",
        worker_id=worker,
        status=status,
        execution_time_seconds=1.0,
        results=outcome.model_dump(mode="json"),
        simulation_status=SimulationStatus(is_simulated=False),
        error=error,
    )


def start(h: Harness, connection: int = 1, worker: str = "w1") -> int:
    h.submit(chunk_spec())
    effects = h.connect(connection, worker)
    _, attempt_id = assigned(effects)["run1.r0.00000"]
    h.turn(WorkerFrame(connection, Accept(attempt_ids=[attempt_id])))
    return attempt_id


def rows(h: Harness) -> list[Any]:
    return [row for effects in h.effects for row in effects.batch.test_rows]


def test_streamed_tests_are_recorded_once_and_not_again_from_the_result() -> None:
    h = Harness()
    attempt_id = start(h)
    effects = h.turn(WorkerFrame(1, TestReports(attempt_id=attempt_id, records=[record(NODES[0])])))
    [row] = effects.batch.test_rows
    assert (row.task_id, row.nodeid, row.attempt_id, row.worker_id) == (
        "run1.r0.00000",
        NODES[0],
        attempt_id,
        "w1",
    )
    assert (row.run_id, row.project, row.rerun) == ("run1", "path:/srv/project", 0)
    assert row.outcome is TestOutcome.PASSED
    assert row.duration_seconds == 0.52

    failing = record(NODES[1], ReportOutcome.FAILED)
    final = chunk_result("w1", [record(NODES[0]), failing, record(NODES[2])])
    effects = h.turn(
        WorkerFrame(1, Result(results=[AttemptResult(attempt_id=attempt_id, result=final)]))
    )
    # Only the two not streamed are added, numbered after the first.
    assert [(r.nodeid, r.outcome, r.seq) for r in effects.batch.test_rows] == [
        (NODES[1], TestOutcome.FAILED, 2),
        (NODES[2], TestOutcome.PASSED, 3),
    ]
    assert [r.status for r in effects.batch.tasks] == [TaskStatus.COMPLETED]
    assert sent(effects, Ack)


def test_node_ids_outside_the_chunk_and_reports_from_other_attempts_are_not_recorded() -> None:
    h = Harness()
    attempt_id = start(h)
    effects = h.turn(
        WorkerFrame(
            1,
            TestReports(attempt_id=attempt_id, records=[record("tests/test_x.py::not_asked")]),
        ),
        WorkerFrame(1, TestReports(attempt_id=attempt_id + 99, records=[record(NODES[0])])),
    )
    assert effects.batch.test_rows == []
    assert h.state.ledger.stray_reports == 2


def test_a_retried_attempt_is_told_which_tests_are_already_recorded() -> None:
    h = Harness()
    first = start(h)
    h.turn(WorkerFrame(1, TestReports(attempt_id=first, records=[record(NODES[0])])))
    h.connect(2, "w2")
    effects = None
    # w1 goes silent mid-chunk; w2 keeps heartbeating and gets the retry.
    for _ in range(8):
        h.clock.advance(1)
        effects = h.turn(WorkerFrame(2, Heartbeat()), Tick())
        if assigned(effects):
            break
    assert effects is not None
    assert h.state.workers["w1"].record.status is WorkerStatus.LOST
    [(_, message)] = [(c, m) for c, m in effects.sends if isinstance(m, Assign) and c == 2]
    [assignment] = message.assignments
    assert assignment.attempt == 2
    assert assignment.completed_tests == [NODES[0]]

    # The lost worker's late stream does not count; the retry's result adds
    # only the tests it ran, and the first test stays recorded once.
    second = assignment.attempt_id
    h.turn(WorkerFrame(2, Accept(attempt_ids=[second])))
    final = chunk_result("w2", [record(NODES[1]), record(NODES[2])])
    h.turn(WorkerFrame(2, Result(results=[AttemptResult(attempt_id=second, result=final)])))
    recorded = sorted((r.nodeid, r.attempt_id) for r in rows(h))
    assert recorded == [(NODES[0], first), (NODES[1], second), (NODES[2], second)]


def test_a_timed_out_chunk_keeps_the_tests_it_finished() -> None:
    h = Harness()
    attempt_id = start(h)
    partial = chunk_result("w1", [record(NODES[0])], status=ResultStatus.TIMED_OUT)
    effects = h.turn(
        WorkerFrame(1, Result(results=[AttemptResult(attempt_id=attempt_id, result=partial)]))
    )
    assert [r.nodeid for r in effects.batch.test_rows] == [NODES[0]]
    assert [t.status for t in effects.batch.tasks] == [TaskStatus.TIMED_OUT]


def test_a_result_without_valid_records_changes_only_the_task() -> None:
    h = Harness()
    attempt_id = start(h)
    broken = TaskResult(
        task_id="run1.r0.00000",
        worker_id="w1",
        status=ResultStatus.COMPLETED,
        execution_time_seconds=1.0,
        results={"tests": "not a list"},
        simulation_status=SimulationStatus(is_simulated=False),
    )
    effects = h.turn(
        WorkerFrame(1, Result(results=[AttemptResult(attempt_id=attempt_id, result=broken)]))
    )
    assert effects.batch.test_rows == []
    assert [t.status for t in effects.batch.tasks] == [TaskStatus.COMPLETED]


def test_a_record_whose_node_id_is_not_a_string_is_refused_not_a_crash() -> None:
    # Found by the protocol fuzzer: a list as a node id reached a set lookup
    # ("unhashable type: 'list'"), an exception inside the coordinator's turn.
    h = Harness()
    attempt_id = start(h)
    h.turn(WorkerFrame(1, TestReports(attempt_id=attempt_id, records=[record(NODES[0])])))
    valid = record(NODES[1]).model_dump(mode="json")
    broken = TaskResult(
        task_id="run1.r0.00000",
        worker_id="w1",
        status=ResultStatus.COMPLETED,
        execution_time_seconds=1.0,
        results={"run_id": "run1", "tests": [{**valid, "nodeid": [NODES[0]]}, valid]},
        simulation_status=SimulationStatus(is_simulated=False),
    )
    effects = h.turn(
        WorkerFrame(1, Result(results=[AttemptResult(attempt_id=attempt_id, result=broken)]))
    )
    assert [r.nodeid for r in effects.batch.test_rows] == [NODES[1]]
    assert h.state.ledger.stray_reports == 1
    assert [t.status for t in effects.batch.tasks] == [TaskStatus.COMPLETED]


def test_recovery_restores_recorded_tests_and_the_row_sequence() -> None:
    h = Harness()
    task = TaskRecord(spec=chunk_spec(), status=TaskStatus.QUEUED, create_time=0.0, queued_at=0.0)
    from test_coordinator_state import SETTINGS

    from testfleet.coordinator.state import CoordinatorState

    h.state = CoordinatorState(
        SETTINGS,
        h.clock.now(),
        RecoveredState(
            open_tasks=[task],
            open_attempts=[],
            workers=[],
            next_attempt_id=7,
            reported_tests={"run1.r0.00000": {NODES[0]}},
            next_test_seq=41,
        ),
    )
    effects = h.connect(1, "w1")
    [(_, message)] = [(c, m) for c, m in effects.sends if isinstance(m, Assign)]
    assert message.assignments[0].completed_tests == [NODES[0]]
    attempt_id = message.assignments[0].attempt_id
    effects = h.turn(WorkerFrame(1, TestReports(attempt_id=attempt_id, records=[record(NODES[1])])))
    assert [r.seq for r in effects.batch.test_rows] == [41]
