"""Bad requests against one real coordinator: clear errors naming the field, nothing lost.

The tests of this module share one coordinator (starting one per test would
triple the module's time) but depend on no order: each submits what it needs.
Every refusal must have the API's error shape ``{"error": {"code",
"message", "details"}}`` and accept nothing. After each test, the coordinator
must still run and serve; once every test has run, in whatever order, the
module's fixture checks that every task any test had accepted is still there,
alone, and completes once a worker joins.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet

pytestmark = [pytest.mark.integration]

JSON = {"Content-Type": "application/json"}


@dataclass
class Api:
    fleet: Fleet
    http: httpx.Client
    #: Every task id the coordinator accepted, in submission order.
    accepted: list[str] = field(default_factory=list)

    def submit_ok(self, body: object) -> None:
        response = self.http.post("/api/v1/tasks", json=body)
        assert response.status_code == 201, response.text
        self.accepted.extend(response.json()["task_ids"])

    def absent(self, *task_ids: str) -> None:
        """Nothing of a refused request was stored."""
        for task_id in task_ids:
            error_of(self.http.get(f"/api/v1/tasks/{task_id}"), 404, "not_found")

    def check_serving(self) -> None:
        """The coordinator process runs and answers /health."""
        coordinator = self.fleet.processes["coordinator"]
        assert coordinator.poll() is None, self.fleet.tail("coordinator")
        health = self.http.get("/api/v1/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"

    def check_kept_every_accepted_task(self) -> None:
        """Only what was accepted is stored, all of it, and it runs once a worker joins."""
        self.check_serving()
        listed = self.http.get("/api/v1/tasks", params={"limit": 1000}).json()
        assert listed["total"] == len(self.accepted)
        assert [t["task_id"] for t in listed["tasks"]] == self.accepted
        if not self.accepted:
            return  # a selection of tests that submitted nothing good (-k)
        assert {t["status"] for t in listed["tasks"]} == {"queued"}
        self.fleet.start_worker("bad-input-worker", slots=2)
        finished = self.fleet.wait_terminal(self.accepted, timeout=60)
        assert {t["status"] for t in finished.values()} == {"completed"}
        assert {t["attempts"] for t in finished.values()} == {1}
        assert self.http.get("/api/v1/tasks").json()["total"] == len(self.accepted)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    fleet = Fleet(Path(tmp_path_factory.mktemp("bad-input")))
    try:
        fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
        with fleet.http(timeout=60) as http:
            shared = Api(fleet, http)
            yield shared
            # Every test has run: what they were refused left nothing behind,
            # and what they had accepted survived all of it.
            shared.check_kept_every_accepted_task()
    finally:
        fleet.close()


@pytest.fixture(autouse=True)
def coordinator_survives(api: Api) -> Iterator[None]:
    """Whatever a test sent, the coordinator still serves afterwards."""
    yield
    api.check_serving()


def task(task_id: str, **extra: object) -> dict:
    return {"task_id": task_id, "type": "simulated", "config": {"duration_seconds": 0}, **extra}


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


def fields(error: dict) -> list[str]:
    return [d.get("field") for d in error["details"]]


def test_good_tasks_between_bad_requests_are_all_kept(api):
    api.submit_ok(task("good-before"))
    response = api.http.post("/api/v1/tasks", content=b'{"type": "simulated",', headers=JSON)
    error_of(response, 400, "malformed_body")
    api.submit_ok([task("good-middle-1"), task("good-middle-2")])
    response = api.http.post("/api/v1/tasks", json=task("bad-between", timeout_seconds=-5))
    error_of(response, 422, "invalid_task")
    api.submit_ok(task("good-after"))
    for task_id in ("good-before", "good-middle-1", "good-middle-2", "good-after"):
        stored = api.http.get(f"/api/v1/tasks/{task_id}")
        assert stored.status_code == 200, stored.text
        assert stored.json()["task"]["status"] == "queued"
    api.absent("bad-between")


def test_malformed_json_is_400_malformed_body(api):
    response = api.http.post("/api/v1/tasks", content=b'{"type": "simulated",', headers=JSON)
    error_of(response, 400, "malformed_body")


def _bad_list() -> list[dict]:
    batch = [task(f"list-{n}") for n in range(5)]
    batch[3] = task("list-3", timeout_seconds="soon")
    return batch


@pytest.mark.parametrize(
    ("body", "field_name", "stored_ids"),
    [
        pytest.param({"task_id": "bad-type", "type": "teleport"}, "type", ["bad-type"], id="type"),
        pytest.param(task("typo", priorty=1), "priorty", ["typo"], id="unknown-field"),
        pytest.param(
            task("negative", timeout_seconds=-5), "timeout_seconds", ["negative"], id="timeout"
        ),
        pytest.param(
            _bad_list(),
            "tasks[3].timeout_seconds",
            [f"list-{n}" for n in range(5)],
            id="one-bad-item-in-a-list",
        ),
    ],
)
def test_invalid_task_is_422_naming_the_field(api, body, field_name, stored_ids):
    error = error_of(api.http.post("/api/v1/tasks", json=body), 422, "invalid_task")
    # The first problem is the one the message leads with; it names the field plainly.
    assert fields(error)[0] == field_name, error
    assert error["message"].startswith(f"invalid task: {field_name}: "), error["message"]
    assert "nothing was accepted" in error["message"]
    api.absent(*stored_ids)


def test_test_task_without_a_project_is_refused_naming_the_field(api):
    task = {
        "task_id": "pytest-run-001",
        "type": "test",
        "config": {"run_id": "r1", "node_ids": ["tests/test_a.py::test_one"]},
    }
    error = error_of(api.http.post("/api/v1/tasks", json=task), 422, "invalid_task")
    assert "project" in error["message"]
    api.absent("pytest-run-001")


def test_test_task_naming_a_branch_instead_of_a_commit_is_refused(api):
    task = {
        "task_id": "pytest-run-002",
        "type": "test",
        "config": {
            "run_id": "r1",
            "project": {"repo": "https://example.invalid/x.git", "commit": "main"},
            "node_ids": ["tests/test_a.py::test_one"],
        },
    }
    error = error_of(api.http.post("/api/v1/tasks", json=task), 422, "invalid_task")
    assert "commit" in error["message"]
    api.absent("pytest-run-002")


def test_benchmark_batch_size_zero_is_refused_naming_the_field(api):
    task = {
        "task_id": "bench-zero",
        "type": "benchmark",
        "config": {"model": "gpt2", "batch_sizes": [0, 1]},
    }
    error = error_of(api.http.post("/api/v1/tasks", json=task), 422, "invalid_task")
    assert "batch_sizes" in error["message"]
    api.absent("bench-zero")


def _command(task_id: str, **config: object) -> dict:
    return {"task_id": task_id, "type": "command", "config": {"argv": ["echo"], **config}}


@pytest.mark.parametrize(
    ("body", "field_name", "words"),
    [
        # NUL bytes fail only at run time, on a worker: refused at submission.
        pytest.param(
            _command("nul-argv", argv=["echo", "a\x00b"]),
            "config.argv[1]",
            "NUL",
            id="nul-in-argv",
        ),
        pytest.param(
            _command("nul-env", env={"HOME": "/x\x00"}), "config.env.HOME", "NUL", id="nul-env"
        ),
        pytest.param(_command("nul-cwd", cwd="/tmp\x00"), "config.cwd", "NUL", id="nul-cwd"),
        # Ids that are not one path segment could never be read, cancelled or waited on.
        pytest.param(task("a/.."), "task_id", "letters, digits", id="slash-dot-dot-id"),
        pytest.param(task("runs/1"), "task_id", "letters, digits", id="slash-id"),
        pytest.param(task("has space"), "task_id", "letters, digits", id="space-id"),
        # The config's fields are named under config., as the user wrote them.
        pytest.param(_command("argv-type", argv=[1]), "config.argv[0]", "string", id="config-path"),
        pytest.param(
            [task("fine-1"), _command("argv-missing", argv=[])],
            "tasks[1].config.argv",
            "at least 1",
            id="config-path-in-list",
        ),
    ],
)
def test_values_that_would_fail_later_are_refused_now(api, body, field_name, words):
    error = error_of(api.http.post("/api/v1/tasks", json=body), 422, "invalid_task")
    assert fields(error)[0] == field_name, error
    assert words in error["details"][0]["problem"], error


YAML = {"Content-Type": "application/yaml"}


@pytest.mark.parametrize(
    ("document", "field_name", "words"),
    [
        # YAML carries what JSON cannot; none of it may reach the store.
        pytest.param(
            "task_id: y-inf\ntype: simulated\nconfig: {duration_seconds: .inf}\n",
            "config.duration_seconds",
            "not a finite number",
            id="inf",
        ),
        pytest.param(
            "task_id: y-nan\ntype: simulated\nconfig: {duration_seconds: .nan}\n",
            "config.duration_seconds",
            "not a finite number",
            id="nan",
        ),
        pytest.param(
            "task_id: y-big\ntype: simulated\nconfig: {seed: 99999999999999999999999}\n",
            "config.seed",
            "64 bits",
            id="integer-past-64-bits",
        ),
        pytest.param(
            'task_id: y-sur\ntype: command\nconfig: {argv: ["\\ud800"]}\n',
            "config.argv[0]",
            "lone surrogate",
            id="lone-surrogate",
        ),
        pytest.param(
            "task_id: y-bin\ntype: command\nconfig: {argv: [!!binary aGk=]}\n",
            "config.argv[0]",
            "bytes",
            id="binary",
        ),
    ],
)
def test_yaml_values_no_store_can_hold_are_refused(api, document, field_name, words):
    response = api.http.post("/api/v1/tasks", content=document.encode(), headers=YAML)
    error = error_of(response, 422, "invalid_task")
    assert fields(error)[0] == field_name, error
    assert words in error["details"][0]["problem"], error


def test_an_offset_past_64_bits_is_422_not_500(api):
    response = api.http.get("/api/v1/tasks", params={"offset": 2**63})
    error = error_of(response, 422, "invalid_parameter")
    assert "offset" in error["message"]
    assert api.http.get("/api/v1/tasks", params={"offset": 2**63 - 1}).json()["tasks"] == []


def test_a_50_mb_body_is_413_body_too_large(api):
    padding = b"x" * (50 * 1024 * 1024)
    huge = b'{"task_id": "huge", "type": "simulated", "config": {"pad": "' + padding + b'"}}'
    response = api.http.post("/api/v1/tasks", content=huge, headers=JSON)
    error_of(response, 413, "body_too_large")
    api.absent("huge")


def test_an_id_submitted_before_is_409_and_nothing_of_the_request_is_accepted(api):
    api.submit_ok(task("submitted-before"))
    body = [task("fresh-in-dup-request"), task("submitted-before")]
    error = error_of(api.http.post("/api/v1/tasks", json=body), 409, "duplicate_task_id")
    assert "'submitted-before'" in error["message"]
    assert "fresh-in-dup-request" not in error["message"]
    api.absent("fresh-in-dup-request")


def test_an_id_twice_in_one_request_is_409_and_nothing_is_accepted(api):
    body = [task("twice"), task("other-in-twice"), task("twice")]
    error = error_of(api.http.post("/api/v1/tasks", json=body), 409, "duplicate_task_id")
    assert "'twice'" in error["message"]
    api.absent("twice", "other-in-twice")


def test_cancel_of_an_unknown_task_is_404(api):
    error = error_of(api.http.post("/api/v1/tasks/no-such-task/cancel"), 404, "not_found")
    assert "no-such-task" in error["message"]


def test_a_bulk_cancel_says_what_became_of_each_id_and_refuses_a_bad_body(api):
    answer = api.http.post("/api/v1/tasks/cancel", json={"task_ids": ["nope-1", "nope-2"]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "cancelled": [],
        "already_finished": [],
        "not_found": ["nope-1", "nope-2"],
    }
    for body, named in (
        ({}, "body.task_ids"),
        ({"task_ids": []}, "body.task_ids"),
        ({"task_ids": "a"}, "body.task_ids"),
        ({"task_ids": ["a"], "force": True}, "body.force"),
        ([], "body"),
    ):
        error = error_of(api.http.post("/api/v1/tasks/cancel", json=body), 422, "invalid_parameter")
        assert fields(error)[0] == named, (body, error)


def test_undrain_of_an_unknown_worker_is_404(api):
    error = error_of(api.http.post("/api/v1/workers/nobody/undrain"), 404, "not_found")
    assert "nobody" in error["message"]


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({}, 422, "invalid_parameter", "body.query"),
        ({"query": "SELECT 1", "max_rows": 0}, 422, "invalid_parameter", "body.max_rows"),
        ({"query": "SELECT 1", "timeout_seconds": 1e9}, 422, "invalid_parameter", "timeout"),
        ({"query": "SELECT 1", "limit": 5}, 422, "invalid_parameter", "body.limit"),
        ({"query": "DELETE FROM distributed_tasks"}, 422, "invalid_query", "this is DELETE"),
        ({"query": "SELECT * FROM nowhere"}, 422, "invalid_query", "nowhere does not exist"),
    ],
)
def test_a_bad_sql_request_is_refused_naming_why(api, body, status, code, words):
    error = error_of(api.http.post("/api/v1/sql", json=body), status, code)
    assert words in error["message"], error


def test_an_export_of_an_unknown_table_is_422(api):
    error = error_of(api.http.get("/api/v1/export/secrets"), 422, "invalid_parameter")
    assert "table" in error["message"]


def test_a_path_no_route_matches_is_named_in_the_404(api):
    error = error_of(api.http.get("/api/v1/tasks/a%2F.."), 404, "not_found")
    assert "no such API route: GET /api/v1/tasks/a/.." in error["message"]


def test_a_bad_query_parameter_is_422(api):
    response = api.http.get("/api/v1/tasks", params={"status": "bogus"})
    error = error_of(response, 422, "invalid_parameter")
    assert any("status" in (f or "") for f in fields(error)), error


def test_openapi_lists_the_api(api):
    openapi = api.http.get("/openapi.json")
    assert openapi.status_code == 200
    paths = set(openapi.json()["paths"])
    for path in (
        "/api/v1/tasks",
        "/api/v1/tasks/{task_id}",
        "/api/v1/tasks/{task_id}/cancel",
        "/api/v1/tasks/cancel",
        "/api/v1/workers",
        "/api/v1/workers/{worker_id}/drain",
        "/api/v1/workers/{worker_id}/undrain",
        "/api/v1/stats",
        "/api/v1/health",
    ):
        assert path in paths, sorted(paths)
