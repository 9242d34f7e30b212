"""The OpenAPI document says what the REST API really sends, and the API sends it.

A real coordinator app runs in-process (Starlette's ``TestClient``) over a
DuckDB file seeded with one of everything (``api_seed``). The first tests
read ``/openapi.json`` itself: every operation has a typed success body, its
errors in the API's ``{"error": {...}}`` shape with the codes it can send,
and nothing FastAPI would have documented instead (``HTTPValidationError``,
errors nothing sends). The others make each route answer each way it can —
success with rich records, every refusal, a store that has failed — and check
every answer against the document with schemathesis's checks (status
documented, content type, body schema). ``test_api_fuzz`` does the same with
generated requests; here each documented answer is sure to be reached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from api_seed import Seeded, seed_store
from fastapi.testclient import TestClient
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import BaseSchema

from testfleet.coordinator.api_models import ErrorCode
from testfleet.coordinator.app import create_app
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.testing.tokens import bearer

#: Small limits, so that both 413s are cheap to reach.
SETTINGS = CoordinatorSettings(max_request_bytes=64 * 1024, max_tasks_per_submit=3)
CHECKS = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


@dataclass
class Api:
    client: TestClient
    document: dict[str, Any]
    schema: BaseSchema
    seeded: Seeded

    def call(
        self,
        method: str,
        template: str,
        status: int,
        *,
        path: dict[str, str] | None = None,
        code: ErrorCode | None = None,
        **request: Any,
    ) -> Any:
        """Send a request to the route ``method template``; check that it answered
        ``status`` (and error ``code``) and that the answer fits the document."""
        url = "/api/v1" + template.format(**(path or {}))
        response = self.client.request(method, url, **request)
        assert response.status_code == status, response.text
        case = self.schema["/api/v1" + template][method].Case(path_parameters=path or {})
        case.validate_response(response, checks=CHECKS)
        body = response.json()
        if code is not None:
            assert body["error"]["code"] == code.value, body
        return body


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    path = tmp_path / "api.duckdb"
    seeded = seed_store(path)
    headers = bearer(path)  # written before the app opens the file
    with TestClient(create_app(path, SETTINGS), headers=headers) as client:
        document = client.get("/openapi.json").json()
        schema = schemathesis.openapi.from_dict(document, config=SchemathesisConfig())
        yield Api(client, document, schema, seeded)


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def error_codes(response: dict[str, Any]) -> set[str]:
    schema = response["content"]["application/json"]["schema"]
    assert schema["allOf"][0] == ERROR_BODY, schema
    return set(schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"])


# ------------------------------------------------------------- the document


def test_every_operation_documents_a_typed_body_and_errors_in_the_shape_sent(api: Api) -> None:
    document = api.document
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in json.dumps(document)
    assert "ValidationError" not in schemas
    for label, operation in operations(document):
        responses = operation["responses"]
        # Every operation but health needs a bearer token and says what a
        # refused one gets (issue 10); health needs none.
        if label in ("GET /api/v1/health", "GET /api/v1/health/live"):
            assert not {"401", "403"} & set(responses), label
            assert {} in operation["security"], label
        else:
            assert error_codes(responses["401"]) == {"unauthenticated"}, label
            assert error_codes(responses["403"]) == {"forbidden"}, label
            assert operation["security"] == [{"bearerToken": []}], label
        (success,) = [status for status in responses if status.startswith("2")]
        content = responses[success]["content"]
        if "application/json" in content:
            body = content["application/json"]["schema"]
            assert body.get("$ref", "").startswith("#/components/schemas/"), (label, body)
        elif "text/event-stream" in content:
            # A live log stream: server-sent events, text.
            assert content["text/event-stream"]["schema"] == {"type": "string"}, label
        else:
            # A download (a Parquet export) names its media type and a binary body.
            ((_, media),) = content.items()
            assert media["schema"] == {"type": "string", "format": "binary"}, label
        assert "body_too_large" in error_codes(responses["413"]), label
        for status, response in responses.items():
            if status[0] in "45" and label not in ("GET /api/v1/health", "GET /api/v1/health/live"):
                assert error_codes(response) <= {code.value for code in ErrorCode}, label
    # Every reference leads somewhere.
    for reference in set(_refs(document)):
        assert reference.removeprefix("#/components/schemas/") in schemas, reference


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_each_route_documents_the_errors_it_can_send_and_no_other(api: Api) -> None:
    documented = {
        label: {
            status: (error_codes(r) if status != "503" or "health" not in label else {"health"})
            for status, r in operation["responses"].items()
            if status[0] in "45"
        }
        for label, operation in operations(api.document)
    }
    # The rate limit answers any route but health before it runs (limits.py);
    # the submit route's own 429 (the per-submitter quota) is the same response.
    for label, errors in documented.items():
        rate_limited = errors.pop("429", None)
        expected = {"rate_limited", "quota_exceeded"} if label == "POST /api/v1/tasks" else None
        assert rate_limited == (None if "health" in label else expected or {"rate_limited"}), label
    # The HTTP protocol answers any route: 408 to headers too slow, 503 past the
    # connection cap (all but health, whose 503 is its own) (http_protocol.py).
    for label, errors in documented.items():
        assert errors.pop("408") == {"request_timeout"}, label
        if "health" not in label:
            assert "unavailable" in errors["503"], label
    #: What the layers before the routes answer (413, and 503 at the connection cap).
    before_routes = {"413": {"body_too_large"}, "503": {"unavailable"}}
    # Every route but health: no usable token, or the wrong role (issue 10).
    authed = {"401": {"unauthenticated"}, "403": {"forbidden"}}
    assert documented["POST /api/v1/tasks"] == {
        "400": {"malformed_body"},
        "409": {"duplicate_task_id"},
        "413": {"body_too_large", "too_many_tasks"},
        "415": {"unsupported_media_type"},
        "422": {"invalid_task"},
        "503": {"unavailable"},
        **authed,
    }
    assert documented["GET /api/v1/tasks"] == {
        "422": {"invalid_parameter"},
        "500": {"storage_error"},
        **before_routes,
        **authed,
    }
    # A plain string in the path cannot fail validation: no 422 there.
    assert documented["GET /api/v1/tasks/{task_id}"] == {
        "404": {"not_found"},
        "500": {"storage_error"},
        **before_routes,
        **authed,
    }
    assert documented["POST /api/v1/tasks/{task_id}/cancel"] == {
        "404": {"not_found"},
        "409": {"already_finished"},
        "503": {"unavailable"},
        **before_routes,
        **authed,
    }
    assert documented["POST /api/v1/tasks/cancel"] == {
        "400": {"malformed_body"},
        "422": {"invalid_parameter"},
        "503": {"unavailable"},
        **before_routes,
        **authed,
    }
    assert documented["GET /api/v1/workers"] == {**before_routes, **authed}
    assert documented["GET /api/v1/health"] == {"413": {"body_too_large"}, "503": {"health"}}
    # Where the loop's 503 and the connection cap's share the response, it says both.
    submit_503 = next(
        op["responses"]["503"]
        for label, op in operations(api.document)
        if label == "POST /api/v1/tasks"
    )
    assert "loop" in submit_503["description"]
    assert "--max-connections" in submit_503["description"]


def test_the_submission_body_is_a_task_or_a_non_empty_list_in_json_or_yaml(api: Api) -> None:
    body = next(op for label, op in operations(api.document) if label == "POST /api/v1/tasks")
    content = body["requestBody"]["content"]
    one = {"$ref": "#/components/schemas/TaskSpec"}
    expected = {"oneOf": [one, {"type": "array", "items": one, "minItems": 1}]}
    assert content["application/json"]["schema"] == expected
    # A YAML body is the same document written in YAML, not a string.
    assert content["application/yaml"]["schema"] == expected
    assert api.document["components"]["schemas"]["TaskSpec"]["required"] == ["type"]


# ------------------------------------------------- answers against the document


def task(task_id: str) -> dict[str, Any]:
    return {"task_id": task_id, "type": "simulated", "config": {"duration_seconds": 0}}


def test_reads_of_real_records_fit_the_document(api: Api) -> None:
    seeded = api.seeded
    listed = api.call("GET", "/tasks", 200)
    assert listed["total"] == 6
    assert {t["status"] for t in listed["tasks"]} == {"queued", "completed", "failed"}
    assert api.call(
        "GET", "/tasks", 200, params={"status": ["queued", "unschedulable"], "limit": 1}
    )["tasks"][0]["task_id"] == (seeded.queued_task)

    detail = api.call("GET", "/tasks/{task_id}", 200, path={"task_id": seeded.completed_task})
    assert [r["disposition"] for r in detail["results"]] == ["retried", "outcome"]
    assert detail["result"]["counted"] is True
    assert detail["task"]["requirements"] == {"hardware": ["cuda"], "tags": {"rack": "a"}}
    failed = api.call("GET", "/tasks/{task_id}", 200, path={"task_id": seeded.failed_task})
    assert failed["task"]["error"] == {"error_class": "task_failure", "message": "exit code 1"}

    (worker,) = api.call("GET", "/workers", 200)["workers"]
    assert worker["capabilities"]["gpus"][0]["name"] == "NVIDIA H200"
    assert api.call("GET", "/stats", 200)["tasks"]["completed"] == 4
    assert api.call("GET", "/health", 200)["status"] == "ok"

    assert api.call("GET", "/results/models", 200) == {"models": [seeded.model]}
    compared = api.call(
        "GET",
        "/results/compare",
        200,
        params={"model": seeded.model, "since": "2024-05-01T12:30:00Z"},
    )
    assert [(r["batch_size"], r["error_class"]) for r in compared["rows"]] == [
        (1, None),
        (64, "out_of_memory"),
    ]
    history = api.call("GET", "/results/history", 200, params={"model": seeded.model})
    assert [(r["batch_size"], r["throughput_change_percent"]) for r in history["rows"]] == [
        (1, None),
        (64, None),
        (1, 25.0),
        (64, None),
    ]

    run = api.call("GET", "/test-runs/{run_id}", 200, path={"run_id": seeded.run_id})
    assert run["tests"][0]["record"]["phases"][1]["sections"] == [["Captured stdout call", "hi\n"]]
    durations = api.call("GET", "/tests/durations", 200, params={"project": seeded.project})
    assert durations["durations"] == {"t.py::a": 0.5}


def test_refused_reads_fit_the_document(api: Api) -> None:
    api.call("GET", "/tasks/{task_id}", 404, path={"task_id": "nope"}, code=ErrorCode.NOT_FOUND)
    bad_limit = api.call(
        "GET", "/tasks", 422, params={"limit": 0}, code=ErrorCode.INVALID_PARAMETER
    )
    assert bad_limit["error"]["details"][0] == {
        "field": "query.limit",
        "problem": "Input should be greater than or equal to 1",
        "type": "greater_than_equal",
    }
    # An epoch number (pydantic would read one) is not the ISO 8601 time the
    # document asks for; the fuzzer found 0 and 2.2250738585072014e-308.
    for number in ("0", "1714564800", "2.2250738585072014e-308", "nan"):
        since = api.call(
            "GET",
            "/results/compare",
            422,
            params={"model": "m", "since": number},
            code=ErrorCode.INVALID_PARAMETER,
        )
        assert "ISO 8601" in since["error"]["message"], number
    api.call(
        "GET",
        "/test-runs/{run_id}",
        422,
        path={"run_id": "no run!"},
        code=ErrorCode.INVALID_PARAMETER,
    )
    # The body-size limit holds before any route, on a GET too.
    api.call("GET", "/workers", 413, content=b"x" * 65537, code=ErrorCode.BODY_TOO_LARGE)


def test_submissions_and_their_refusals_fit_the_document(api: Api) -> None:
    accepted = api.call("POST", "/tasks", 201, json=task("new-1"))
    assert accepted == {"accepted": 1, "task_ids": ["new-1"]}
    yaml = b"- {task_id: new-2, type: simulated}\n- {task_id: new-3, type: simulated}\n"
    assert api.call(
        "POST", "/tasks", 201, content=yaml, headers={"Content-Type": "application/yaml"}
    )["task_ids"] == ["new-2", "new-3"]
    duplicate = api.call(
        "POST", "/tasks", 409, json=[task("new-4"), task("new-1")], code=ErrorCode.DUPLICATE_TASK_ID
    )
    assert duplicate["error"]["details"] == [{"ids": ["new-1"]}]
    api.call(
        "POST",
        "/tasks",
        400,
        content=b'{"type": ',
        headers={"Content-Type": "application/json"},
        code=ErrorCode.MALFORMED_BODY,
    )
    api.call(
        "POST",
        "/tasks",
        415,
        content=b"task",
        headers={"Content-Type": "text/plain"},
        code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    )
    api.call("POST", "/tasks", 422, json=[], code=ErrorCode.INVALID_TASK)
    api.call(
        "POST",
        "/tasks",
        413,
        json=[task(f"many-{n}") for n in range(4)],
        code=ErrorCode.TOO_MANY_TASKS,
    )
    api.call(
        "POST",
        "/tasks",
        413,
        json=task("x" * 70_000),
        code=ErrorCode.BODY_TOO_LARGE,
    )


def test_changes_and_their_refusals_fit_the_document(api: Api) -> None:
    seeded = api.seeded
    assert api.call(
        "POST", "/tasks/{task_id}/cancel", 200, path={"task_id": seeded.queued_task}
    ) == {"task_id": seeded.queued_task, "status": "cancelled"}
    api.call(
        "POST",
        "/tasks/{task_id}/cancel",
        409,
        path={"task_id": seeded.completed_task},
        code=ErrorCode.ALREADY_FINISHED,
    )
    api.call(
        "POST", "/tasks/{task_id}/cancel", 404, path={"task_id": "nope"}, code=ErrorCode.NOT_FOUND
    )
    assert api.call(
        "POST", "/tasks/cancel", 200, json={"task_ids": [seeded.failed_task, "nope"]}
    ) == {"cancelled": [], "already_finished": [seeded.failed_task], "not_found": ["nope"]}
    api.call("POST", "/tasks/cancel", 422, json={}, code=ErrorCode.INVALID_PARAMETER)
    # Broken JSON is malformed_body here too, as on POST /tasks (FastAPI says 422).
    broken = api.call(
        "POST",
        "/tasks/cancel",
        400,
        content=b'{"task_ids": [',
        headers={"Content-Type": "application/json"},
        code=ErrorCode.MALFORMED_BODY,
    )
    assert broken["error"]["message"].startswith("the request body is not valid JSON")
    # Bytes that are not text: FastAPI's own 400, with the same code.
    api.call(
        "POST",
        "/tasks/cancel",
        400,
        content=b"\xff\xfe",
        headers={"Content-Type": "application/json"},
        code=ErrorCode.MALFORMED_BODY,
    )

    # The seeded worker was connected when the coordinator stopped: it is
    # disconnected now, and drain and undrain say so rather than assume.
    worker = {"worker_id": seeded.worker_id}
    assert api.call("POST", "/workers/{worker_id}/drain", 200, path=worker) == {
        **worker,
        "status": "disconnected",
        "draining": True,
    }
    assert api.call("POST", "/workers/{worker_id}/undrain", 200, path=worker) == {
        **worker,
        "status": "disconnected",
        "draining": False,
    }
    for change in ("drain", "undrain"):
        api.call(
            "POST",
            f"/workers/{{worker_id}}/{change}",
            404,
            path={"worker_id": "nobody"},
            code=ErrorCode.NOT_FOUND,
        )


def test_a_coordinator_whose_store_failed_answers_as_documented(api: Api) -> None:
    # The store fails under the running coordinator: the next commit fails,
    # the loop stops (fail-stop), and every answer says so in its documented form.
    api.client.app.state.store.close()  # type: ignore[attr-defined]
    api.call("POST", "/tasks", 503, json=task("after-1"), code=ErrorCode.UNAVAILABLE)
    health = api.call("GET", "/health", 503)
    assert health["status"] == "failed"
    assert "closed" in health["error"]
    api.call("POST", "/tasks", 503, json=task("after-2"), code=ErrorCode.UNAVAILABLE)
    api.call(
        "POST",
        "/tasks/{task_id}/cancel",
        503,
        path={"task_id": api.seeded.queued_task},
        code=ErrorCode.UNAVAILABLE,
    )
    api.call("POST", "/tasks/cancel", 503, json={"task_ids": ["a"]}, code=ErrorCode.UNAVAILABLE)
    api.call(
        "POST",
        "/workers/{worker_id}/drain",
        503,
        path={"worker_id": api.seeded.worker_id},
        code=ErrorCode.UNAVAILABLE,
    )
    api.call("GET", "/tasks", 500, code=ErrorCode.STORAGE_ERROR)
    api.call("GET", "/stats", 500, code=ErrorCode.STORAGE_ERROR)
