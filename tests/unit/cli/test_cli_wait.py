"""``testfleet wait`` against a scripted coordinator (``httpx.MockTransport``) on a fake clock.

Each task follows a timeline: from second N of the wait on, the coordinator
reports it with these fields. The waiter sleeps by advancing the fake clock,
so a wait of minutes takes no time and nothing sleeps.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.cli.waiting import TaskWaiter, WaitEnd
from testfleet.client import FleetClient
from testfleet.testing import FakeClock

CUDA = "hardware: needs one of [cuda]; connected workers offer [cpu]"
MEMORY = "min_memory_gb: needs 64; connected workers offer at most 15.6"
QUEUED: dict[str, Any] = {"status": "queued", "unschedulable_reason": None}
STUCK: dict[str, Any] = {"status": "queued", "unschedulable_reason": CUDA}
RUNNING: dict[str, Any] = {"status": "running", "worker_id": "gpu-1", "attempts": 1}
DONE: dict[str, Any] = {"status": "completed", "worker_id": "gpu-1", "attempts": 1}


def task_document(task_id: str, **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "task_id": task_id,
        "type": "command",
        "priority": 5,
        "status": "queued",
        "unschedulable_reason": None,
        "worker_id": None,
        "attempts": 0,
        "duration_seconds": None,
        "error": None,
    }
    document.update(fields)
    return document


@dataclass
class ScriptedCoordinator:
    """Answers ``GET /api/v1/tasks/{id}`` from each task's timeline on ``clock``."""

    clock: FakeClock
    timelines: dict[str, list[tuple[float, dict[str, Any]]]]
    started: float = 0.0
    polls: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = self.clock.now()

    def handle(self, request: httpx.Request) -> httpx.Response:
        task_id = request.url.path.rsplit("/", 1)[-1]
        elapsed = self.clock.now() - self.started
        self.polls.append(elapsed)
        current = [fields for since, fields in self.timelines[task_id] if since <= elapsed][-1]
        body: dict[str, Any] = {
            "task": task_document(task_id, **current),
            "attempts": [],
            "result": None,
        }
        return httpx.Response(200, json=body)

    def client(self) -> FleetClient:
        return FleetClient("http://fleet.test", transport=httpx.MockTransport(self.handle))


def waiter(
    coordinator: ScriptedCoordinator,
    said: list[str],
    *task_ids: str,
    timeout: float | None = None,
    unschedulable_timeout: float = 30.0,
) -> TaskWaiter:
    return TaskWaiter(
        coordinator.client(),
        task_ids or tuple(coordinator.timelines),
        clock=coordinator.clock,
        sleep=coordinator.clock.advance,
        say=said.append,
        poll=1.0,
        timeout=timeout,
        unschedulable_timeout=unschedulable_timeout,
    )


def test_an_unschedulable_task_is_explained_once_then_given_up_on() -> None:
    clock = FakeClock()
    coordinator = ScriptedCoordinator(clock, {"bench": [(0, STUCK)]})
    said: list[str] = []

    outcome = waiter(coordinator, said, unschedulable_timeout=30).run()

    assert outcome.end is WaitEnd.UNSCHEDULABLE
    assert outcome.stuck == {"bench": CUDA}
    assert outcome.waiting == ["bench"]
    assert coordinator.polls[-1] == 30  # gave up as soon as the 30 s had passed
    assert len(said) == 1
    assert said[0].startswith(f"bench cannot run: {CUDA}. It stays queued")
    assert "up to 30s (--unschedulable-timeout)" in said[0]


def test_a_new_reason_is_said_again_without_restarting_the_count() -> None:
    clock = FakeClock()
    other = {"status": "queued", "unschedulable_reason": MEMORY}
    coordinator = ScriptedCoordinator(clock, {"bench": [(0, STUCK), (10, other)]})
    said: list[str] = []

    outcome = waiter(coordinator, said, unschedulable_timeout=30).run()

    assert outcome.end is WaitEnd.UNSCHEDULABLE
    assert outcome.stuck == {"bench": MEMORY}
    assert coordinator.polls[-1] == 30
    assert said[1:] == [f"bench still cannot run, now because: {MEMORY}"]


def test_a_task_that_becomes_schedulable_again_restarts_the_count() -> None:
    clock = FakeClock()
    timeline: list[tuple[float, dict[str, Any]]] = [
        (0, STUCK),
        (20, QUEUED),
        (25, STUCK),
        (100, RUNNING),
        (110, DONE),
    ]
    coordinator = ScriptedCoordinator(clock, {"bench": timeline})
    said: list[str] = []
    run = waiter(coordinator, said, unschedulable_timeout=30)

    outcome = run.run()

    # Unschedulable 0-20 s, schedulable, unschedulable again from 25 s: 30 s later it gives up.
    assert outcome.end is WaitEnd.UNSCHEDULABLE
    assert coordinator.polls[-1] == 55
    assert run.unschedulable_for("bench") == 30
    assert said[1] == "bench can run now: a worker that fits is connected"
    assert said[2].startswith(f"bench cannot run: {CUDA}")
    assert len(said) == 3


def test_a_task_that_finds_a_worker_in_time_is_waited_for_to_the_end() -> None:
    clock = FakeClock()
    timeline: list[tuple[float, dict[str, Any]]] = [(0, STUCK), (29, RUNNING), (200, DONE)]
    coordinator = ScriptedCoordinator(clock, {"bench": timeline, "echo": [(0, DONE)]})
    said: list[str] = []

    outcome = waiter(coordinator, said, unschedulable_timeout=30).run()

    assert outcome.end is WaitEnd.FINISHED
    assert coordinator.polls[-1] == 200
    assert {t: d["status"] for t, d in outcome.tasks.items()} == {
        "bench": "completed",
        "echo": "completed",
    }
    assert said[-1] == "bench can run now: a worker that fits is connected"


def test_timeout_comes_first_when_it_is_shorter() -> None:
    clock = FakeClock()
    coordinator = ScriptedCoordinator(clock, {"bench": [(0, STUCK)]})
    outcome = waiter(coordinator, [], timeout=10, unschedulable_timeout=30).run()
    assert outcome.end is WaitEnd.TIMED_OUT
    assert coordinator.polls[-1] == 10


def test_an_infinite_unschedulable_timeout_waits_for_a_worker() -> None:
    clock = FakeClock()
    coordinator = ScriptedCoordinator(clock, {"bench": [(0, STUCK), (3600, DONE)]})
    said: list[str] = []
    outcome = waiter(coordinator, said, unschedulable_timeout=float("inf")).run()
    assert outcome.end is WaitEnd.FINISHED
    assert "waiting as long as it takes for that" in said[0]


def test_a_cancelled_unschedulable_task_finishes_the_wait_quietly() -> None:
    clock = FakeClock()
    cancelled = {"status": "cancelled", "unschedulable_reason": None}
    coordinator = ScriptedCoordinator(clock, {"bench": [(0, STUCK), (5, cancelled)]})
    said: list[str] = []
    outcome = waiter(coordinator, said).run()
    assert outcome.end is WaitEnd.FINISHED
    assert len(said) == 1  # no "can run now" for a task that will never run


# ---------------------------------------------------------------- the command


@pytest.fixture
def fake_fleet(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The ``wait`` command's client answers from ``answers[task_id]`` (a task's fields,
    or an exception to raise, e.g. KeyboardInterrupt for Ctrl-C during a request)."""
    answers: dict[str, Any] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        task_id = request.url.path.rsplit("/", 1)[-1]
        answer = answers[task_id]
        if isinstance(answer, BaseException):
            raise answer
        return httpx.Response(200, json={"task": task_document(task_id, **answer)})

    def client_for(coordinator: str | None) -> FleetClient:
        return FleetClient("http://fleet.test", transport=httpx.MockTransport(handle))

    # By module object: ``testfleet.cli.app`` as a dotted name is the Typer app.
    monkeypatch.setattr(sys.modules["testfleet.cli.app"], "client_for", client_for)
    return answers


def test_wait_exits_4_naming_the_reason_when_a_task_is_unschedulable(
    fake_fleet: dict[str, Any],
) -> None:
    fake_fleet["bench"] = STUCK
    done = CliRunner().invoke(
        app, ["wait", "bench", "--unschedulable-timeout", "0"], terminal_width=400
    )
    assert done.exit_code == 4, done.output
    # Brackets survive (they are text, not markup).
    assert f"bench cannot run: {CUDA}" in done.stderr
    assert f"error: bench has been unschedulable for 0s: {CUDA}" in done.stderr
    assert "testfleet cancel ID" in done.stderr


def test_ctrl_c_during_wait_says_the_tasks_keep_running(fake_fleet: dict[str, Any]) -> None:
    fake_fleet["bench"] = KeyboardInterrupt()
    done = CliRunner().invoke(app, ["wait", "bench"], terminal_width=400)
    assert done.exit_code == 130, done.output
    assert "stopped waiting; the tasks keep running on the fleet" in done.stderr
    assert "Traceback" not in done.output


def test_wait_help_documents_the_exit_codes() -> None:
    done = CliRunner().invoke(app, ["wait", "--help"])
    text = re.sub(r"[\s│]+", " ", done.stdout)  # the help panel wraps lines in a box
    assert "3 on --timeout, 4 when a task stayed unschedulable for --unschedulable-timeout" in text
    assert "130 on Ctrl-C (the tasks keep running)" in text
