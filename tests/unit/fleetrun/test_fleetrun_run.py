"""FleetRun against a fake coordinator and a fake clock: splitting, following a
run, reporting each test once, reruns of failures on other workers, chunks
that fail or can never be placed, and stopping early.

The fake plays the fleet: each poll, every queued chunk is "run" by the first
connected worker its requirements allow, and produces the records a scripted
``behaviour`` says. No sockets, no sleeping: the run's sleep advances the
fake clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from testfleet.client import FleetError
from testfleet.domain.pytest_tasks import (
    Interruption,
    InterruptKind,
    PhaseReport,
    ProjectSource,
    ReportOutcome,
    TestConfig,
    TestLocation,
    TestOutcome,
    TestPhase,
    TestRecord,
)
from testfleet.domain.task import TaskSpec
from testfleet.fleetrun.run import FleetRun, warm_up
from testfleet.fleetrun.run_types import CollectedTest, FleetRunError, RunSettings
from testfleet.testing import FakeClock

Behaviour = Callable[[str, str, int], ReportOutcome | None]


def passing(_nodeid: str, _worker: str, _rerun: int) -> ReportOutcome | None:
    return ReportOutcome.PASSED


def record(nodeid: str, outcome: ReportOutcome, seconds: float = 0.1) -> TestRecord:
    return TestRecord(
        nodeid=nodeid,
        location=TestLocation(path="t.py", lineno=1, domain=nodeid),
        phases=[
            PhaseReport(when=TestPhase.SETUP, outcome=ReportOutcome.PASSED),
            PhaseReport(
                when=TestPhase.CALL,
                outcome=outcome,
                duration=seconds,
                longrepr="E   assert 0\nAssertionError: boom" if outcome == "failed" else "",
            ),
            PhaseReport(when=TestPhase.TEARDOWN, outcome=ReportOutcome.PASSED),
        ],
    )


class FakeFleet:
    """The coordinator and its workers, as far as a run can tell."""

    def __init__(
        self,
        workers: list[str],
        behaviour: Behaviour = passing,
        *,
        hardware: dict[str, list[str]] | None = None,
    ) -> None:
        self.worker_ids = workers
        self.behaviour = behaviour
        self.hardware = hardware or {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.documents: dict[str, dict[str, Any]] = {}
        self.rows: list[dict[str, Any]] = []
        self.durations: dict[str, float] = {}
        self.cancelled: list[str] = []
        #: Requests, not tasks: a run cancels all it cancels in one step.
        self.cancel_requests = 0
        self.fail_chunks: dict[str, str] = {}
        self.polls = 0
        #: Chunks start running and never finish by themselves.
        self.hold = False
        #: Chunks for which this says True keep running (asked at every poll).
        self.held: Callable[[str, TestConfig], bool] = lambda _task_id, _config: False
        #: A test that calls pytest.exit(): its chunk stops there, as on a worker.
        self.interrupt: str | None = None

    # -- the client's interface
    def workers(self) -> list[dict[str, Any]]:
        return [
            {
                "worker_id": w,
                "connected": True,
                "draining": False,
                "slots": 1,
                "task_types": ["command", "test"],
            }
            for w in self.worker_ids
        ]

    def test_durations(self, project: str) -> dict[str, float]:
        assert project == "path:/srv/project"
        return self.durations

    def submit(self, documents: Sequence[dict[str, Any]]) -> list[str]:
        for document in documents:
            TaskSpec.model_validate(document)  # every document is one the API accepts
            self.documents[document["task_id"]] = document
            self.tasks[document["task_id"]] = {
                "task_id": document["task_id"],
                "status": "queued",
                "worker_id": None,
                "unschedulable_reason": None,
                "error": None,
            }
        return [d["task_id"] for d in documents]

    def cancel_many(self, task_ids: Sequence[str]) -> dict[str, list[str]]:
        self.cancel_requests += 1
        for task_id in task_ids:
            self.cancelled.append(task_id)
            self.tasks[task_id]["status"] = "cancelled"
        return {"cancelled": list(task_ids), "already_finished": [], "not_found": []}

    def test_run(self, run_id: str, *, after_seq: int = 0) -> dict[str, Any]:
        self.polls += 1
        self._step()
        rows = [r for r in self.rows if r["seq"] > after_seq]
        return {
            "tasks": list(self.tasks.values()),
            "tests": rows,
            "last_seq": rows[-1]["seq"] if rows else after_seq,
            "more": False,
        }

    # -- the fleet
    def _step(self) -> None:
        for task_id, task in self.tasks.items():
            if task["status"] == "running" and not self.hold:
                task["status"] = "queued"  # held until now: look again
            if task["status"] != "queued":
                continue
            document = self.documents[task_id]
            requirements = document["requirements"]
            allowed = [
                w
                for w in self.worker_ids
                if w not in requirements.get("exclude_workers", [])
                and (
                    not requirements.get("hardware")
                    or set(requirements["hardware"]) & set(self.hardware.get(w, ["cpu"]))
                )
            ]
            if not allowed:
                task["unschedulable_reason"] = "hardware: needs one of [cuda]"
                continue
            worker = allowed[0]
            config = TestConfig.model_validate(document["config"])
            task["worker_id"] = worker
            if self.hold or self.held(task_id, config):
                task["status"] = "running"
                continue
            if task_id in self.fail_chunks:
                task["status"] = "failed"
                task["error"] = {
                    "error_class": "invalid_config",
                    "message": self.fail_chunks[task_id],
                }
                continue
            task["status"] = "completed"
            for nodeid in config.node_ids:
                outcome = self.behaviour(nodeid, worker, config.rerun)
                if outcome is None:
                    continue
                made = record(nodeid, outcome)
                if nodeid == self.interrupt:
                    made = made.model_copy(
                        update={
                            "phases": made.phases[:1],
                            "interrupted": Interruption(kind=InterruptKind.EXIT, message="bye"),
                        }
                    )
                self.rows.append(
                    {
                        "seq": len(self.rows) + 1,
                        "task_id": task_id,
                        "nodeid": nodeid,
                        "worker_id": worker,
                        "rerun": config.rerun,
                        "record": made.model_dump(mode="json"),
                    }
                )
                if nodeid == self.interrupt:
                    task["status"] = "failed"  # the rest of the chunk does not run
                    break


def collected(count: int, **hardware: tuple[str, ...]) -> list[CollectedTest]:
    return [
        CollectedTest(
            nodeid=f"t.py::test_{i}",
            location=TestLocation(path="t.py", lineno=i, domain=f"test_{i}"),
            hardware=hardware.get(f"test_{i}", ()),
        )
        for i in range(count)
    ]


def run_on(
    fleet: FakeFleet, tests: list[CollectedTest], *, reached: bool = False, **settings: Any
) -> tuple[FleetRun, list[tuple[TestRecord, str]]]:
    clock = FakeClock()
    reported: list[tuple[TestRecord, str]] = []
    run = FleetRun(
        fleet,
        RunSettings(
            run_id="run1",
            project=ProjectSource(path="/srv/project"),
            args=["tests", "-q"],
            **settings,
        ),
        report=lambda rec, worker: reported.append((rec, worker)),
        clock=clock.now,
        sleep=clock.advance,
        reached=reached,
    )
    run.run(tests)
    return run, reported


def test_every_test_is_reported_once_from_more_chunks_than_workers() -> None:
    fleet = FakeFleet(["w1", "w2"])
    run, reported = run_on(fleet, collected(40))
    assert sorted(r.nodeid for r, _ in reported) == sorted(f"t.py::test_{i}" for i in range(40))
    assert run.outcome.chunks > 2
    assert run.outcome.split_by == "count"
    assert run.outcome.workers == {"w1"}  # the fake runs everything on the first allowed
    first = TestConfig.model_validate(fleet.documents["run1.r0.00000"]["config"])
    assert first.args == ["tests", "-q"]
    assert first.project.path == "/srv/project"


def test_history_splits_by_duration_with_the_longest_test_first() -> None:
    fleet = FakeFleet(["w1", "w2"])
    fleet.durations = {f"t.py::test_{i}": 0.01 * (i + 1) for i in range(20)}
    run, _ = run_on(fleet, collected(20))
    assert run.outcome.split_by == "durations"
    first = TestConfig.model_validate(fleet.documents["run1.r0.00000"]["config"])
    assert first.node_ids[0] == "t.py::test_19"


def test_a_test_failing_on_one_worker_and_passing_on_another_is_flaky() -> None:
    def flaky_on_w1(nodeid: str, worker: str, _rerun: int) -> ReportOutcome:
        if nodeid == "t.py::test_3" and worker == "w1":
            return ReportOutcome.FAILED
        return ReportOutcome.PASSED

    fleet = FakeFleet(["w1", "w2"], flaky_on_w1)
    run, reported = run_on(fleet, collected(6), rerun_failures=2)
    outcomes = {r.nodeid: (r.outcome, worker) for r, worker in reported}
    assert len(reported) == 6
    assert outcomes["t.py::test_3"] == (TestOutcome.PASSED, "w2")
    [flaky] = run.outcome.flaky
    assert (flaky.nodeid, flaky.failed_on, flaky.passed_on) == ("t.py::test_3", ("w1",), "w2")
    assert flaky.first_failure == "AssertionError: boom"
    [rerun_doc] = [d for d in fleet.documents.values() if ".r1." in d["task_id"]]
    assert rerun_doc["requirements"]["exclude_workers"] == ["w1"]
    assert TestConfig.model_validate(rerun_doc["config"]).rerun == 1


def test_a_test_that_always_fails_is_reported_once_with_its_last_failure() -> None:
    def broken(nodeid: str, _worker: str, _rerun: int) -> ReportOutcome:
        return ReportOutcome.FAILED if nodeid == "t.py::test_0" else ReportOutcome.PASSED

    fleet = FakeFleet(["w1", "w2", "w3"], broken)
    run, reported = run_on(fleet, collected(3), rerun_failures=2)
    failed = [(r.nodeid, worker) for r, worker in reported if r.outcome is TestOutcome.FAILED]
    assert failed == [("t.py::test_0", "w3")]
    assert run.outcome.flaky == []
    assert run.outcome.reruns == 2
    # The second rerun avoided both workers it had failed on.
    [second] = [d for d in fleet.documents.values() if ".r2." in d["task_id"]]
    assert second["requirements"]["exclude_workers"] == ["w1", "w2"]


def test_without_reruns_a_failure_is_reported_at_once() -> None:
    def broken(nodeid: str, _worker: str, _rerun: int) -> ReportOutcome:
        return ReportOutcome.FAILED if nodeid == "t.py::test_1" else ReportOutcome.PASSED

    run, reported = run_on(FakeFleet(["w1"], broken), collected(2))
    assert sorted((r.nodeid, r.outcome) for r, _ in reported) == [
        ("t.py::test_0", TestOutcome.PASSED),
        ("t.py::test_1", TestOutcome.FAILED),
    ]
    assert run.outcome.reruns == 0


def test_tests_of_a_chunk_that_failed_are_errors_that_say_why() -> None:
    fleet = FakeFleet(["w1"])
    fleet.fail_chunks["run1.r0.00000"] = "project.path '/srv/project' does not exist on worker w1"
    run, reported = run_on(fleet, collected(8))
    errors = [r for r, _ in reported if r.outcome is TestOutcome.ERROR]
    assert errors
    message = errors[0].phases[0].longrepr
    assert message.startswith("not run: chunk run1.r0.00000 failed on worker w1: project.path")
    assert set(run.outcome.not_run) == {r.nodeid for r in errors}
    assert len(reported) == 8


def test_a_chunk_no_worker_can_run_is_given_up_after_the_wait() -> None:
    fleet = FakeFleet(["w1"])
    tests = collected(3, test_2=("cuda",))
    _, reported = run_on(fleet, tests, unschedulable_wait_seconds=5.0)
    by_id = {r.nodeid: r for r, _ in reported}
    assert by_id["t.py::test_2"].outcome is TestOutcome.ERROR
    assert "no connected worker can run it: hardware: needs one of [cuda]" in (
        by_id["t.py::test_2"].phases[0].longrepr
    )
    assert len(fleet.cancelled) == 1
    assert by_id["t.py::test_0"].outcome is TestOutcome.PASSED
    # It waited (on the fake clock) about the given time, polling meanwhile.
    assert fleet.polls >= 5.0 / 0.05


def test_no_worker_taking_test_tasks_is_a_clear_error_after_the_wait() -> None:
    fleet = FakeFleet([])
    with pytest.raises(
        FleetRunError,
        match=r"no connected worker takes test tasks after waiting 5 s \(--wait-for-workers\)",
    ):
        run_on(fleet, collected(1), wait_for_workers_seconds=5.0)
    assert fleet.tasks == {}  # nothing submitted


def test_a_run_waits_for_workers_that_are_still_connecting() -> None:
    """After a coordinator restart its workers take a moment to reconnect: the run
    says it waits, and starts once one is there (on the fake clock, 3 s later)."""
    fleet = FakeFleet([])
    clock = FakeClock()
    start = clock.now()
    asked = 0
    workers = fleet.workers

    def reconnecting() -> list[dict[str, Any]]:
        nonlocal asked
        asked += 1
        if clock.now() - start >= 3.0:
            fleet.worker_ids = ["w1"]
        return workers()

    fleet.workers = reconnecting  # type: ignore[method-assign]
    said: list[str] = []
    reported: list[TestRecord] = []
    run = FleetRun(
        fleet,
        RunSettings(run_id="run1", project=ProjectSource(path="/srv/project"), args=[]),
        report=lambda rec, _worker: reported.append(rec),
        clock=clock.now,
        sleep=clock.advance,
        say=said.append,
    )
    run.run(collected(2))
    assert [r.outcome for r in reported] == [TestOutcome.PASSED, TestOutcome.PASSED]
    assert said[0] == (
        "waiting up to 60 s for a worker that takes test tasks "
        "(none is connected yet; --wait-for-workers sets how long)"
    )
    assert said[1] == "1 worker(s) ready after 3.0 s"
    assert len(said) == 2  # said once, not per poll
    assert asked > 2


def test_no_wait_for_workers_fails_at_once() -> None:
    fleet = FakeFleet([])
    with pytest.raises(FleetRunError, match=r"takes test tasks: start one"):
        run_on(fleet, collected(1), wait_for_workers_seconds=0.0)


def test_stopping_early_cancels_the_chunks_not_finished() -> None:
    fleet = FakeFleet(["w1"])
    fleet.hold = True  # chunks start and never finish on their own
    clock = FakeClock()
    reported: list[TestRecord] = []
    run = FleetRun(
        fleet,
        RunSettings(run_id="run1", project=ProjectSource(path="/srv/project"), args=[]),
        report=lambda rec, _worker: reported.append(rec),
        should_stop=lambda: True,  # as after -x saw a failure
        clock=clock.now,
        sleep=clock.advance,
    )
    outcome = run.run(collected(8))
    assert outcome.stopped_early
    assert sorted(fleet.cancelled) == sorted(fleet.tasks)
    # All in one request: a slot one cancel frees never starts another of them.
    assert fleet.cancel_requests == 1
    # Unfinished tests are not invented as errors: pytest says it stopped.
    assert reported == []
    assert outcome.not_run == {}


def test_a_test_calling_pytest_exit_stops_the_run_after_it_as_a_serial_run_stops() -> None:
    """Tests before it (in collection order) are still waited for and
    reported, none after it is, and chunks of later tests are cancelled."""

    def first_fails(nodeid: str, _worker: str, _rerun: int) -> ReportOutcome:
        return ReportOutcome.FAILED if nodeid == "t.py::test_0" else ReportOutcome.PASSED

    fleet = FakeFleet(["w1", "w2"], first_fails)
    fleet.interrupt = "t.py::test_4"
    later = {f"t.py::test_{i}" for i in range(8, 12)}
    # Chunks of later tests never finish by themselves; the one with test_2
    # finishes only a few polls after the interruption arrives.
    fleet.held = lambda _task_id, config: (
        bool(later & set(config.node_ids))
        or ("t.py::test_2" in config.node_ids and fleet.polls < 5)
    )
    run, reported = run_on(fleet, collected(12), rerun_failures=1)

    # test_0 failed and was held for a rerun that no longer happens: its
    # failure is reported at the end; test_2 and 3 came after the interruption.
    assert [r.nodeid for r, _ in reported] == [f"t.py::test_{i}" for i in (1, 4, 2, 3, 0)]
    stopped = next(r for r, _ in reported if r.nodeid == "t.py::test_4")
    assert stopped.outcome is TestOutcome.INTERRUPTED
    assert run.outcome.interrupted == stopped.interrupted
    assert run.outcome.reruns == 0
    cancelled = {n for t in fleet.cancelled for n in fleet.documents[t]["config"]["node_ids"]}
    assert cancelled == later
    assert run.outcome.not_run == {}


def test_warm_up_sends_one_session_start_per_free_slot() -> None:
    fleet = FakeFleet(["w1", "w2", "w3"])
    workers = fleet.workers()
    workers[0]["slots"] = 4
    workers[1]["running"] = 1  # busy: no free slot
    workers[2]["task_types"] = ["command"]  # takes no test tasks
    fleet.workers = lambda: workers  # type: ignore[method-assign]
    settings = RunSettings(
        run_id="run1", project=ProjectSource(path="/srv/project"), args=["tests"]
    )
    ids = warm_up(fleet, settings)
    assert ids == [f"run1.warm.{i:04d}" for i in range(4)]
    for task_id in ids:
        config = TestConfig.model_validate(fleet.documents[task_id]["config"])
        assert config.node_ids == []  # only start the session
        assert (config.run_id, config.args) == ("run1", ["tests"])


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_coordinator_saying_not_now_gets_no_warm_up_and_no_answer_is_an_error(
    status: int,
) -> None:
    # Found by the chaos suite: a run started while the coordinator's disk was
    # full ended at its warm-up, which only saves time.
    class Refusing(FakeFleet):
        def __init__(self, answer: int) -> None:
            super().__init__(["w1"])
            self.answer = answer

        def workers(self) -> list[dict[str, Any]]:
            raise FleetError("cannot reach the coordinator", status=self.answer)

    settings = RunSettings(run_id="run1", project=ProjectSource(path="/p"), args=[])
    saying_not_now = Refusing(status)
    assert warm_up(saying_not_now, settings) == []
    assert saying_not_now.documents == {}
    with pytest.raises(FleetError, match="cannot reach"):
        warm_up(Refusing(0), settings)


def test_the_plugins_this_pytest_loaded_go_with_every_chunk_and_warm_up(
    pytestconfig: pytest.Config,
) -> None:
    """This very session loaded the development extras' plugins: the run asks
    the workers for exactly those (and they block any other they have)."""
    from testfleet.fleetrun.session import loaded_plugins

    plugins = loaded_plugins(pytestconfig)
    by_name = {plugin.name: plugin for plugin in plugins}
    assert by_name["asyncio"].distribution == "pytest-asyncio"
    assert by_name["testfleet"].distribution == "testfleet"
    assert by_name["anyio"].version
    fleet = FakeFleet(["w1"])
    run_on(fleet, collected(3), plugins=plugins)
    warm_up(
        fleet,
        RunSettings(
            run_id="run1", project=ProjectSource(path="/srv/project"), args=[], plugins=plugins
        ),
    )
    assert fleet.documents
    for document in fleet.documents.values():
        assert TestConfig.model_validate(document["config"]).plugins == plugins


def test_a_workers_warning_becomes_the_warning_pytest_reports() -> None:
    from testfleet.domain.pytest_tasks import TestWarning
    from testfleet.fleetrun.session import warning_message

    builtin = warning_message(
        TestWarning(message="old", category="DeprecationWarning", filename="t.py", lineno=3)
    )
    assert builtin.category is DeprecationWarning
    assert (str(builtin.message), builtin.filename, builtin.lineno) == ("old", "t.py", 3)
    custom = warning_message(TestWarning(message="x", category="MyPluginWarning"))
    assert custom.category.__name__ == "MyPluginWarning"
    assert issubclass(custom.category, Warning)
    again = warning_message(TestWarning(message="y", category="MyPluginWarning"))
    assert again.category is custom.category


class Outage(FakeFleet):
    """A coordinator that cannot be reached for its first ``down`` calls of
    ``test_run`` and ``submit`` (a restart), or answers ``status`` instead."""

    def __init__(self, down: int, status: int = 0, *, committed: bool = False) -> None:
        super().__init__(["w1"])
        self.down = down
        self.status = status
        #: The lost submit was committed all the same (its answer was what got lost).
        self.committed = committed
        self.submits = 0

    def _fail(self) -> None:
        self.down -= 1
        raise FleetError("cannot reach the coordinator", status=self.status)

    def submit(self, documents: Sequence[dict[str, Any]]) -> list[str]:
        self.submits += 1
        if documents[0]["task_id"] in self.documents:
            raise FleetError("duplicate", status=409, code="duplicate_task_id")
        if self.down > 0:
            if self.committed:
                super().submit(documents)
            self._fail()
        return super().submit(documents)

    def test_run(self, run_id: str, *, after_seq: int = 0) -> dict[str, Any]:
        if self.down > 0:
            self._fail()
        return super().test_run(run_id, after_seq=after_seq)


@pytest.mark.parametrize("status", [0, 502, 503, 504])
def test_a_run_rides_out_a_coordinator_restart(status: int) -> None:
    fleet = Outage(down=5, status=status)
    _, reported = run_on(fleet, collected(8))
    assert sorted(r.nodeid for r, _ in reported) == sorted(f"t.py::test_{i}" for i in range(8))
    assert fleet.submits == 6


def test_a_resubmission_refused_as_a_duplicate_was_committed_by_the_lost_try() -> None:
    fleet = Outage(down=1, committed=True)
    _, reported = run_on(fleet, collected(4))
    assert len(reported) == 4
    assert fleet.submits == 2


def test_a_duplicate_on_the_first_try_is_an_error() -> None:
    fleet = Outage(down=0)
    fleet.documents["run1.r0.00000"] = {}
    with pytest.raises(FleetError, match="duplicate"):
        run_on(fleet, collected(4))


def test_an_outage_longer_than_the_bound_ends_the_run_with_the_error() -> None:
    fleet = Outage(down=10**9)
    with pytest.raises(FleetError, match="cannot reach"):
        run_on(fleet, collected(4))
    assert fleet.submits > 1


def test_a_coordinator_never_reached_fails_at_once_unless_the_warm_up_reached_it() -> None:
    class Down(FakeFleet):
        calls = 0
        down = True

        def workers(self) -> list[dict[str, Any]]:
            self.calls += 1
            if self.down:
                if self.calls >= 3:
                    self.down = False
                raise FleetError("cannot reach the coordinator", status=0)
            return super().workers()

    fleet = Down(["w1"])
    with pytest.raises(FleetError, match="cannot reach"):
        run_on(fleet, collected(2))
    assert fleet.calls == 1
    fleet = Down(["w1"])
    _, reported = run_on(fleet, collected(2), reached=True)
    assert len(reported) == 2
    assert fleet.calls == 4


def test_a_coordinator_answering_503_from_the_first_call_is_waited_out() -> None:
    # Its disk is full (found by the chaos suite): it answers, so it is there,
    # and it takes requests again on its own once space returns.
    class Degraded(FakeFleet):
        calls = 0

        def workers(self) -> list[dict[str, Any]]:
            self.calls += 1
            if self.calls < 3:
                raise FleetError("the coordinator cannot write its database", status=503)
            return super().workers()

    fleet = Degraded(["w1"])
    _, reported = run_on(fleet, collected(2))
    assert len(reported) == 2
    assert fleet.calls == 3  # two refusals, then the answer


def test_a_refusal_that_is_not_transient_is_not_retried() -> None:
    fleet = Outage(down=3, status=400)
    with pytest.raises(FleetError):
        run_on(fleet, collected(4))
    assert fleet.submits == 1
