"""The coordinator is killed with SIGKILL mid-run and restarted on the same file and port.

Workers reconnect by themselves. Every task the first coordinator accepted
must end exactly once: completed, with one counted result, and a history whose
bookkeeping agrees with the task row.
"""

from __future__ import annotations

import signal
from collections import Counter

import duckdb
import pytest

from testfleet.client import FleetError
from testfleet.domain.enums import ResultDisposition, ResultStatus, TaskStatus
from testfleet.worker.transports import Transport

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = ("restart-a", "restart-b")
#: Long enough to be running still when the workers are frozen (the short
#: tasks beside them finish in under a second each).
SLOW_SECONDS = 8.0


def simulated(task_id: str, seconds: float) -> dict:
    return {
        "task_id": task_id,
        "type": "simulated",
        "config": {"duration_seconds": seconds},
        "timeout_seconds": 120,
    }


def completed_count(fleet) -> int:
    return int(fleet.client.stats()["tasks"]["completed"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("transport", list(Transport))
def test_sigkilled_coordinator_restarts_and_every_accepted_task_ends_once(fleet):
    fleet.start_coordinator()
    for worker_id in WORKERS:
        fleet.start_worker(worker_id, slots=2, wait=False)
    fleet.wait_for_workers(WORKERS)

    first = [simulated(f"restart-{n:02d}", 0.3 + 0.7 * ((n * 7) % 10) / 9) for n in range(60)]
    accepted = fleet.client.submit(first)
    assert len(accepted) == 60

    fleet.wait_until(
        lambda: completed_count(fleet) >= 8, 120, "some tasks to complete before the crash"
    )
    before = fleet.client.stats()["tasks"]
    assert before["completed"] < 60, "everything finished before the crash; nothing was tested"
    fleet.send_signal(fleet.processes["coordinator"], signal.SIGKILL)

    fleet.start_coordinator()  # same file, same port
    # The restarted coordinator still knows every accepted task and refuses its id again.
    with pytest.raises(FleetError, match="already submitted") as refused:
        fleet.client.submit(simulated(accepted[0], 0))
    assert refused.value.status == 409
    late = fleet.client.submit(
        [simulated(f"restart-late-{n}", 0.2) for n in range(4)]
    )  # queued behind the rest
    fleet.wait_for_workers(WORKERS, timeout=90)

    every = accepted + late
    finished = fleet.wait_terminal(every, timeout=150)
    assert Counter(t["status"] for t in finished.values()) == {"completed": len(every)}

    fleet.stop_all()
    with fleet.open_store() as store:
        assert store.count_tasks() == len(every)
        assert bookkeeping_problems(store, every) == []


def bookkeeping_problems(store, task_ids) -> list[str]:
    """Every way a task's row, history and results could disagree (empty: they agree)."""
    problems: list[str] = []
    for task_id in task_ids:
        task = store.get_task(task_id)
        if task is None:
            problems.append(f"{task_id}: missing")
            continue
        history = store.get_attempts(task_id)
        results = store.get_results(task_id)
        counted = [r for r in results if r.counted]
        completed_attempts = [a for a in history if a.status.value == "completed"]
        open_attempts = [a for a in history if not a.status.is_final]
        if task.status.value != "completed":
            problems.append(f"{task_id}: status {task.status.value}")
        if not history:
            problems.append(f"{task_id}: no history")
        if task.attempts != len(history):
            problems.append(f"{task_id}: attempts={task.attempts} but {len(history)} rows")
        if open_attempts:
            problems.append(f"{task_id}: open attempts {open_attempts}")
        if len(completed_attempts) != 1:
            problems.append(f"{task_id}: {len(completed_attempts)} completed attempts")
        elif completed_attempts[0].attempt_id != task.current_attempt_id:
            problems.append(
                f"{task_id}: completed attempt {completed_attempts[0].attempt_id} is not "
                f"current_attempt_id {task.current_attempt_id}"
            )
        if len(counted) != 1:
            problems.append(f"{task_id}: {len(counted)} counted results")
        elif counted[0].attempt_id != task.current_attempt_id:
            problems.append(
                f"{task_id}: counted result of attempt {counted[0].attempt_id}, "
                f"current is {task.current_attempt_id}"
            )
        elif counted[0].result.status.value != "completed":
            problems.append(f"{task_id}: counted result {counted[0].result.status.value}")
        for attempt in history:
            if attempt.status.value not in ("completed", "lost", "cancelled"):
                problems.append(f"{task_id}: attempt {attempt.attempt_id} {attempt.status}")
            if attempt.status.value == "lost" and attempt.error_class is None:
                problems.append(f"{task_id}: lost attempt {attempt.attempt_id} without a class")
            if attempt.worker_id not in WORKERS:
                problems.append(f"{task_id}: attempt on unknown worker {attempt.worker_id}")
        if [a.attempt for a in history] != list(range(1, len(history) + 1)):
            problems.append(f"{task_id}: attempt numbers {[a.attempt for a in history]}")
        by_id = {a.attempt_id: a for a in history}
        for result in results:
            attempt = by_id.get(result.attempt_id)
            if attempt is None:
                problems.append(f"{task_id}: result for unknown attempt {result.attempt_id}")
            elif not result.counted and attempt.status.value == "completed":
                problems.append(f"{task_id}: uncounted result of completed {result.attempt_id}")
            elif result.worker_id != attempt.worker_id:
                problems.append(f"{task_id}: result {result.attempt_id} from another worker")
        if len({r.attempt_id for r in results}) != len(results):
            problems.append(f"{task_id}: two results for one attempt")
    return problems


@pytest.mark.timeout(300)
@pytest.mark.parametrize("transport", list(Transport))
def test_workers_declared_lost_by_the_restarted_coordinator_come_back(fleet):
    """Workers frozen (SIGSTOP) across the restart miss their grace period: the new
    coordinator declares them lost and requeues their attempts; when they thaw,
    their late results are kept in history but never counted."""
    fleet.start_coordinator()
    workers = {w: fleet.start_worker(w, slots=2, wait=False) for w in WORKERS}
    fleet.wait_for_workers(WORKERS)
    # Two long tasks first (lower priority numbers go first): they are still
    # running on a worker when it is frozen, so that worker certainly holds
    # attempts the restarted coordinator will declare lost, and reports them
    # (finished or cancelled) when it thaws, after they stopped being current.
    slow = [{**simulated(f"frozen-slow-{n}", SLOW_SECONDS), "priority": 1} for n in range(2)]
    accepted = fleet.client.submit(
        slow + [simulated(f"frozen-{n:02d}", 0.3 + 0.5 * (n % 4) / 3) for n in range(24)]
    )
    slow_ids = [t["task_id"] for t in slow]

    def some_done_and_the_slow_ones_running() -> bool:
        counts = fleet.client.stats()["tasks"]
        running = all(fleet.task(t)["task"]["status"] == "running" for t in slow_ids)
        return counts["completed"] >= 4 and running

    fleet.wait_until(some_done_and_the_slow_ones_running, 120, "work under way on both workers")
    for process in workers.values():
        fleet.send_signal(process, signal.SIGSTOP)
    try:
        fleet.send_signal(fleet.processes["coordinator"], signal.SIGKILL)
        fleet.start_coordinator()

        def all_lost() -> bool:
            states = {w["worker_id"]: w["status"] for w in fleet.client.workers()}
            return all(states.get(w) == "lost" for w in WORKERS)

        fleet.wait_until(all_lost, 60, "the frozen workers to be declared lost")
    finally:
        for process in workers.values():
            fleet.send_signal(process, signal.SIGCONT)
    fleet.wait_for_workers(WORKERS, timeout=90)
    finished = fleet.wait_terminal(accepted, timeout=150)
    assert Counter(t["status"] for t in finished.values()) == {"completed": len(accepted)}

    # Through the API: each slow task's first attempt reported after it was
    # lost; that result is listed as late and not counted, and the task's
    # outcome is its current attempt's result.
    def late_results(task_id: str) -> list[dict] | None:
        detail = fleet.task(task_id)
        late = [r for r in detail["results"] if r["disposition"] == "late"]
        return late or None

    for task_id in slow_ids:
        late = fleet.wait_until(
            lambda task_id=task_id: late_results(task_id), 60, f"{task_id}'s late result"
        )
        detail = fleet.task(task_id)
        lost_attempts = {a["attempt_id"] for a in detail["attempts"] if a["status"] == "lost"}
        assert {r["attempt_id"] for r in late} <= lost_attempts, (late, detail["attempts"])
        assert not any(r["counted"] for r in late)
        assert detail["task"]["status"] == "completed"
        assert detail["result"]["disposition"] == "outcome"
        assert detail["result"]["status"] == "completed"
        last = detail["attempts"][-1]
        assert detail["result"]["attempt_id"] == last["attempt_id"], detail
        assert last["status"] == "completed"

    fleet.stop_all()
    with fleet.open_store() as store:
        assert bookkeeping_problems(store, accepted) == []
        lost = [
            a
            for task_id in accepted
            for a in store.get_attempts(task_id)
            if a.status.value == "lost"
        ]
        assert lost, "no attempt was lost: the frozen workers kept their work?"
        assert {a.error_class.value for a in lost if a.error_class} == {"worker_lost"}
        for attempt in lost:
            task = store.get_task(attempt.task_id)
            assert task is not None
            assert task.attempts >= 2
            assert task.current_attempt_id != attempt.attempt_id
        # The DuckDB file says the same: every late result belongs to a lost
        # attempt, is not counted, and left its task's outcome alone.
        lost_ids = {a.attempt_id for a in lost}
        late = [
            r
            for task_id in accepted
            for r in store.get_results(task_id)
            if r.disposition is ResultDisposition.LATE
        ]
        assert {r.task_id for r in late} >= set(slow_ids), late
        for result in late:
            assert result.attempt_id in lost_ids, result
            assert not result.counted
            task = store.get_task(result.task_id)
            counted = store.get_counted_result(result.task_id)
            assert task is not None
            assert counted is not None
            assert task.status is TaskStatus.COMPLETED
            assert counted.attempt_id == task.current_attempt_id != result.attempt_id
            assert counted.result.status is ResultStatus.COMPLETED


@pytest.mark.timeout(120)
def test_a_coordinator_starts_on_a_file_with_a_row_it_cannot_read_and_says_so(fleet):
    # Issue 8: one unreadable worker row (memory stored as null by a build that
    # let +inf in) kept every coordinator from starting on the file.
    fleet.start_coordinator()
    fleet.start_worker("poisoned", wait=True)
    accepted = fleet.client.submit([simulated("after-poison", 0)])
    fleet.stop_all()
    connection = duckdb.connect(str(fleet.db))
    connection.execute(
        "UPDATE worker_nodes SET capabilities = json_object('hostname', 'x', 'os', 'L', "
        "'python_version', '3', 'memory_gb', NULL) WHERE worker_id = 'poisoned'"
    )
    connection.close()

    fleet.start_coordinator()
    stats = fleet.client.stats()
    (problem,) = stats["recovery"]["unreadable_rows"]
    assert "worker_id='poisoned' of worker_nodes cannot be read" in problem
    assert "left out at start-up" in fleet.log_report()
    # The worker comes back under the same id; its row is written afresh.
    fleet.start_worker("poisoned", wait=True)
    finished = fleet.wait_terminal(accepted, timeout=60)
    assert finished["after-poison"]["status"] == "completed"
