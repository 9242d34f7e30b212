"""Schemathesis fuzzes the REST API against the coordinator's own OpenAPI document.

The real app (``create_app``) runs in-process under Starlette's ``TestClient``,
over a real DuckDB file seeded with one of everything (``api_seed``), its loop
running. Every operation of ``/openapi.json`` (whatever routes the app has:
a new router is covered without changes here; the worker WebSocket is not an
operation) gets schema-valid and schema-violating requests that hypothesis
generates from the document, and every answer is checked by schemathesis:

- ``not_a_server_error``: no 5xx;
- ``status_code_conformance``: the status is one the operation documents;
- ``content_type_conformance``: the content type is the documented one;
- ``response_schema_conformance``: the body fits that status's schema, which
  for an error is the ``{"error": {"code", "message", "details"}}`` shape with
  the codes the route documents for it;
- ``response_headers_conformance``;
- ``negative_data_rejection``: a request that breaks the document is refused;
- ``positive_data_acceptance``: a request that fits it is accepted, except on
  ``POST /api/v1/tasks``: a task document has rules JSON Schema does not say
  (``config`` depends on ``type``, fields that depend on each other, no NUL
  byte anywhere, integers within 64 bits), so a schema-valid document may
  rightly get the documented 422 ``invalid_task``, whose body is still checked;
  ``POST /api/v1/sql``, whose query must be SQL DuckDB accepts (422
  ``invalid_query`` otherwise); and ``POST /api/v1/tokens``, where an enrol
  token's lifetime is capped at 7 days while other roles' are not (a bound
  that depends on another field, which the document cannot say: 422
  ``invalid_parameter`` naming ``body.expires_in_seconds``).

Requests go through the ``TestClient`` rather than schemathesis's own ASGI
transport so that the app's lifespan (its loop) starts and stops with the
fixture. Generation is derandomized and bounded, so a run is reproducible
and takes about half a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from api_seed import seed_store
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, reject, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Err, Ok
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation, BaseSchema
from starlette.testclient import httpx as client_http  # httpx, or its fork httpx2

from testfleet.coordinator.app import create_app
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.testing.tokens import bearer

pytestmark = [pytest.mark.slow]

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
    checks.positive_data_acceptance,
]
#: Operations whose schema-valid requests may rightly be refused (see the docstring).
#: A task document has rules JSON Schema does not say; a query string must be
#: SQL that DuckDB accepts, which no schema says either.
NOT_ALL_VALID_DATA_ACCEPTED = {"POST /api/v1/tasks", "POST /api/v1/sql", "POST /api/v1/tokens"}
EXAMPLES_PER_OPERATION_AND_MODE = 40


@dataclass
class Api:
    client: TestClient
    schema: BaseSchema
    #: An admin token's secret.
    secret: str
    #: Requests sent, per operation label and generation mode (so the test is not vacuous).
    sent: dict[tuple[str, GenerationMode], int] = field(default_factory=dict)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    path = tmp_path / "fuzz.duckdb"
    seed_store(path)
    headers = bearer(path)  # written before the app opens the file
    secret = headers["Authorization"].removeprefix("Bearer ")
    # The client sends no token of its own: each request carries what
    # schemathesis put in it, the admin token in positive cases (from the
    # configuration below), none or junk in negative ones (which must be refused).
    # No rate limit: the fuzzers send hundreds of requests from one address in
    # a burst, and the limiter's refusals (429, tested on their own) would hide
    # what each operation answers.
    settings = CoordinatorSettings(rate_limit_per_second=0)
    with TestClient(create_app(path, settings=settings)) as client:
        document = client.get("/openapi.json", headers=headers).json()
        # An explicit configuration: no schemathesis.toml found on disk applies.
        config = SchemathesisConfig.from_dict(
            {"auth": {"openapi": {"bearerToken": {"bearer": secret}}}}
        )
        yield Api(client, schemathesis.openapi.from_dict(document, config=config), secret)


def send(client: TestClient, case: Case) -> client_http.Response:
    """Send ``case`` as schemathesis would (its serialization), through ``client``."""
    request = case.as_transport_kwargs(base_url=str(client.base_url))
    assert not request.get("cookies"), "the API takes no cookies"
    body = {}
    if "json" in request:
        body["json"] = request["json"]
    if "data" in request:
        # Already serialized (YAML, or bytes): httpx takes those as content.
        body["content"] = request["data"]
    try:
        return client.request(
            request["method"],
            request["url"],
            params=request.get("params"),
            headers=request.get("headers"),
            **body,
        )
    except client_http.InvalidURL:
        # A query over httpx's 64 KiB per URL component (a parameter far past
        # its documented length, percent-encoded): no client sends it, and
        # uvicorn refuses request lines that long before the app sees them.
        reject()


def fuzz(api: Api, operation: APIOperation, mode: GenerationMode) -> str | None:
    """Run hypothesis over one operation in one mode; the failure it found, or None."""
    excluded = (
        [checks.positive_data_acceptance] if operation.label in NOT_ALL_VALID_DATA_ACCEPTED else []
    )

    @given(operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def requests_answer_as_documented(case: Case) -> None:
        response = send(api.client, case)
        key = (operation.label, mode)
        api.sent[key] = api.sent.get(key, 0) + 1
        case.validate_response(response, checks=CHECKS, excluded_checks=excluded)

    try:
        requests_answer_as_documented()
    except Unsatisfiable:
        # Nothing of this operation can break the document (no parameters, or
        # only a plain string in the path): there is no negative request to send.
        assert mode is GenerationMode.NEGATIVE, operation.label
    except (Exception, BaseExceptionGroup) as failure:  # schemathesis raises a group
        return f"{operation.label} ({mode.value} data):\n{failure}"
    return None


def test_every_operation_answers_as_its_openapi_document_says(api: Api) -> None:
    results = list(api.schema.get_all_operations())
    assert [r.err() for r in results if isinstance(r, Err)] == []  # the document is valid
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    failures = [
        found
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if (found := fuzz(api, operation, mode)) is not None
    ]
    assert not failures, "\n\n".join(failures)

    # Not vacuous: every operation was called, and every one with a query or
    # a body also with requests that break the document.
    labels = {operation.label for operation in operations}
    assert {"POST /api/v1/tasks", "GET /api/v1/tasks/{task_id}", "GET /api/v1/health"} <= labels
    for operation in operations:
        assert api.sent.get((operation.label, GenerationMode.POSITIVE), 0) > 0, operation.label
        if operation.query or operation.body:
            assert api.sent.get((operation.label, GenerationMode.NEGATIVE), 0) > 0, operation.label


def test_no_operation_but_health_answers_without_credentials(api: Api) -> None:
    """Every operation of the document, with a request schemathesis would send
    with the token: without it, or with a junk or unknown one, it is refused
    with 401 before anything else is looked at."""
    operations = [r.ok() for r in api.schema.get_all_operations() if isinstance(r, Ok)]
    refused = 0
    for operation in operations:
        # Any value for a path parameter: the token is checked before it is read.
        case = operation.Case(path_parameters={p.name: "x" for p in operation.path_parameters})
        request = case.as_transport_kwargs(base_url=str(api.client.base_url))
        for authorization in (None, "Bearer junk", "Basic YTpi", "Bearer tfk_tok-00000000"):
            headers = {"Authorization": authorization} if authorization else {}
            response = api.client.request(request["method"], request["url"], headers=headers)
            if operation.label == "GET /api/v1/health":
                assert response.status_code == 200, response.text
                assert set(response.json()) == {"status"}  # no details without a token
                continue
            if operation.label == "GET /api/v1/health/live":
                assert response.status_code == 200, response.text
                assert response.json() == {"status": "alive", "role": "leader"}
                continue
            assert response.status_code == 401, (operation.label, authorization, response.text)
            assert response.json()["error"]["code"] == "unauthenticated"
            assert response.headers["WWW-Authenticate"] == "Bearer"
            refused += 1
    assert refused >= 4 * (len(operations) - 2) > 40  # all but the two health routes
