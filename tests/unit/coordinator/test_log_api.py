"""``GET /api/v1/tasks/{id}/log`` over a real app (no worker): the answers for a
queued, a finished and an unknown task, and a bad ``after``; and the CLI's
follower on a fake client (the live path runs in tests/integration/test_it_live_logs.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from testfleet.cli.logs import MISSED_NOTE, LogFollower
from testfleet.coordinator.app import create_app
from testfleet.coordinator.log_tails import attempt_separator
from testfleet.security.tokens import Role
from testfleet.testing import FakeClock
from testfleet.testing.tokens import bearer


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, dict[Role, dict[str, str]]]]:
    path = tmp_path / "logs.duckdb"
    headers = {role: bearer(path, role) for role in (Role.VIEWER, Role.SUBMITTER)}
    with TestClient(create_app(path, clock=FakeClock(1_800_000_000.0))) as client:
        task = {"task_id": "q", "type": "simulated", "config": {"duration_seconds": 1}}
        submitted = client.post("/api/v1/tasks", json=task, headers=headers[Role.SUBMITTER])
        assert submitted.status_code == 201, submitted.text
        yield client, headers


def test_a_queued_task_has_no_log_yet_and_is_not_finished(app: Any) -> None:
    client, headers = app
    answer = client.get("/api/v1/tasks/q/log", headers=headers[Role.VIEWER])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "queued"
    assert body["chunks"] == []
    assert not body["running"]
    assert not body["finished"]
    assert body["final_log"] is None


def test_a_finished_task_answers_finished_with_its_stored_log(app: Any) -> None:
    client, headers = app
    cancelled = client.post("/api/v1/tasks/q/cancel", headers=headers[Role.SUBMITTER])
    assert cancelled.status_code == 200, cancelled.text
    body = client.get("/api/v1/tasks/q/log?after=5", headers=headers[Role.VIEWER]).json()
    assert body["finished"]
    assert body["status"] == "cancelled"
    assert body["final_log"] == ""  # cancelled before any attempt: no result, no log


def test_unknown_tasks_and_bad_after_are_4xx_naming_the_problem(app: Any) -> None:
    client, headers = app
    missing = client.get("/api/v1/tasks/nope/log", headers=headers[Role.VIEWER])
    assert missing.status_code == 404
    assert "nope" in missing.text
    bad = client.get("/api/v1/tasks/q/log?after=-1", headers=headers[Role.VIEWER])
    assert bad.status_code in (400, 422)
    assert "after" in bad.text


class FakeLogClient:
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.asked: list[int] = []

    def task_log(self, task_id: str, *, after: int = 0) -> dict[str, Any]:
        self.asked.append(after)
        return self.answers.pop(0)


def _answer(chunks: list[tuple[int, str]], nxt: int, **fields: Any) -> dict[str, Any]:
    base = {
        "status": "running",
        "attempt_id": 1,
        "worker_id": "w",
        "finished": False,
        "missed": False,
        "final_log": None,
    }
    return base | fields | {"chunks": [{"seq": s, "data": d} for s, d in chunks], "next_after": nxt}


def test_the_follower_prints_each_chunk_once_and_stops_when_the_task_ends() -> None:
    client = FakeLogClient(
        [
            _answer([(1, "a\n")], 1),
            _answer([], 1),
            _answer([(2, "b\x1b[2J\n")], 2, missed=True),
            _answer([(3, "end\n")], 3, finished=True, status="completed"),
        ]
    )
    out: list[str] = []
    sleeps: list[float] = []
    follower = LogFollower(
        client,  # type: ignore[arg-type]
        "t",
        write=out.append,
        note=lambda _: None,
        sleep=sleeps.append,
        poll=0.5,
        follow=True,
    )
    last = follower.run()
    assert last["status"] == "completed"
    assert client.asked == [0, 1, 1, 2]
    assert "".join(out) == "a\n" + MISSED_NOTE + "b\\x1b[2J\nend\n"  # escapes shown, not obeyed
    assert sleeps == [0.5, 0.5, 0.5]


def test_without_follow_one_read_and_a_finished_tasks_stored_log() -> None:
    client = FakeLogClient([_answer([], 0, finished=True, status="failed", final_log="boom")])
    out: list[str] = []
    follower = LogFollower(
        client,  # type: ignore[arg-type]
        "t",
        write=out.append,
        note=lambda _: None,
        sleep=lambda _: None,
    )
    assert follower.run()["status"] == "failed"
    assert out == ["boom\n"]


def test_the_event_stream_of_a_finished_task_sends_its_log_and_ends(app: Any) -> None:
    client, headers = app
    client.post("/api/v1/tasks/q/cancel", headers=headers[Role.SUBMITTER])
    with client.stream("GET", "/api/v1/tasks/q/log/stream", headers=headers[Role.VIEWER]) as got:
        assert got.status_code == 200
        assert got.headers["content-type"].startswith("text/event-stream")
        body = "".join(got.iter_text())
    assert 'event: final\ndata: {"data": "", "attempt_id": null}\n\n' in body
    assert body.endswith('event: end\ndata: {"status": "cancelled"}\n\n')


def test_the_event_stream_refuses_a_bad_last_event_id_and_unknown_tasks(app: Any) -> None:
    client, headers = app
    bad = client.get(
        "/api/v1/tasks/q/log/stream", headers=headers[Role.VIEWER] | {"Last-Event-ID": "abc"}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_parameter"
    assert "header.last-event-id" in bad.text
    missing = client.get("/api/v1/tasks/nope/log/stream", headers=headers[Role.VIEWER])
    assert missing.status_code == 404


def test_the_follower_shows_a_retrys_separator_once_and_adds_no_note_of_its_own() -> None:
    separator = attempt_separator(2, "w-2")
    client = FakeLogClient(
        [
            _answer([(1, "one\n")], 1),
            _answer([(2, separator), (3, "two\n")], 3, attempt_id=5, worker_id="w-2"),
            _answer([], 3, attempt_id=5, finished=True, status="completed"),
        ]
    )
    out: list[str] = []
    notes: list[str] = []
    follower = LogFollower(
        client,  # type: ignore[arg-type]
        "t",
        write=out.append,
        note=notes.append,
        sleep=lambda _: None,
        follow=True,
    )
    follower.run()
    assert "".join(out) == "one\n── attempt 2 on worker w-2 ──\ntwo\n"
    assert notes == []
