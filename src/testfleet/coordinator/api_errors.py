"""The errors the REST API sends, each documented where it can happen.

Callers: every route and exception handler that refuses a request builds its
answer with :func:`error_response`; every route declares the errors it can
send with ``responses=refusals(...)`` from the catalogue below. That is the
whole convention for a new route::

    @router.get(
        "/things/{thing_id}",
        response_model=ThingView,                # what it returns when it succeeds
        responses=refusals(THING_NOT_FOUND, INVALID_PARAMETER, STORAGE_ERROR),
    )

- ``response_model``: a :mod:`~testfleet.coordinator.api_models` model (given
  explicitly, because a route that may also return an error response is
  annotated ``-> ThingView | JSONResponse``).
- ``refusals``: each :class:`ApiRefusal` the route can really send, and no
  other. ``INVALID_PARAMETER`` belongs to routes whose parameters or body can
  fail validation (a plain ``str`` path parameter cannot); ``STORAGE_ERROR``
  to routes that read the store; ``UNAVAILABLE`` to routes that change state
  through the loop.
- A route whose success is not JSON (a file to download) names its media
  type instead: ``response_class=...`` and
  ``responses={200: {"content": {"text/csv": {}}}, **refusals(...)}``.
- Not listed per route: the 413 of the body-size limit, which any request can
  get before it reaches a route; ``refusals`` adds it (and
  :mod:`~testfleet.coordinator.openapi` to a route that has no ``refusals``).
  That module also drops FastAPI's own 422 (``HTTPValidationError``), which
  is not what this API sends.

``tests/unit/coordinator/test_api_fuzz.py`` (schemathesis) checks the running
app against the document: a status or a body a route sends but does not
declare fails it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from testfleet.coordinator.api_models import ErrorBody, ErrorCode, FieldProblem, RefusedIds
from testfleet.store import StoreError

log = logging.getLogger(__name__)

ERROR_BODY_REF = "#/components/schemas/ErrorBody"


@dataclass(frozen=True, slots=True)
class ApiRefusal:
    """One way a request can be refused: its status, its ``error.code``, and
    when it happens (the text the OpenAPI document shows for it)."""

    status: int
    code: ErrorCode
    when: str

    def response(
        self, message: str, details: Sequence[FieldProblem | RefusedIds | dict[str, Any]] = ()
    ) -> JSONResponse:
        """This refusal, saying ``message`` about the request at hand."""
        return error_response(self.status, self.code, message, details)


MALFORMED_BODY = ApiRefusal(
    400, ErrorCode.MALFORMED_BODY, "The body is not valid JSON (or YAML, when sent as YAML)."
)
TASK_NOT_FOUND = ApiRefusal(404, ErrorCode.NOT_FOUND, "No task has this id.")
WORKER_NOT_FOUND = ApiRefusal(
    404,
    ErrorCode.NOT_FOUND,
    "No worker with this id is connected, draining, or disconnected and not yet lost.",
)
DUPLICATE_TASK_ID = ApiRefusal(
    409,
    ErrorCode.DUPLICATE_TASK_ID,
    "A task id was submitted before or is twice in the request; nothing was accepted.",
)
ALREADY_FINISHED = ApiRefusal(
    409, ErrorCode.ALREADY_FINISHED, "The task has already finished: nothing to cancel."
)
BODY_TOO_LARGE = ApiRefusal(
    413,
    ErrorCode.BODY_TOO_LARGE,
    "The body is over the coordinator's size limit (16 MiB unless configured); "
    "any request, before it reaches a route.",
)
TOO_MANY_TASKS = ApiRefusal(
    413,
    ErrorCode.TOO_MANY_TASKS,
    "More tasks in one request than the coordinator's limit: split the batch.",
)
UNSUPPORTED_MEDIA_TYPE = ApiRefusal(
    415,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    "The Content-Type is neither JSON nor YAML.",
)
INVALID_TASK = ApiRefusal(
    422,
    ErrorCode.INVALID_TASK,
    "A task document breaks a rule; `details` names each field. Nothing was accepted.",
)
INVALID_PARAMETER = ApiRefusal(
    422,
    ErrorCode.INVALID_PARAMETER,
    "A parameter or the body does not fit this route; `details` names each one.",
)
INVALID_QUERY = ApiRefusal(
    422,
    ErrorCode.INVALID_QUERY,
    "The SQL is not one read-only statement, or DuckDB refused it (syntax, an unknown "
    "table, a file it may not read); the message says which.",
)
QUERY_TIMEOUT = ApiRefusal(
    422,
    ErrorCode.QUERY_TIMEOUT,
    "The query ran past its timeout_seconds and was stopped.",
)
UNAUTHENTICATED = ApiRefusal(
    401,
    ErrorCode.UNAUTHENTICATED,
    "No valid `Authorization: Bearer <token>` header: missing, malformed, unknown, "
    "expired or revoked.",
)
FORBIDDEN = ApiRefusal(
    403,
    ErrorCode.FORBIDDEN,
    "The token's role may not do this (or a submitter named another's task).",
)
STORAGE_ERROR = ApiRefusal(
    500,
    ErrorCode.STORAGE_ERROR,
    "The store could not be read (a row no longer decodes); the coordinator keeps serving.",
)
RATE_LIMITED = ApiRefusal(
    429,
    ErrorCode.RATE_LIMITED,
    "This client sent more requests than the coordinator's rate limit allows; "
    "any request, before it reaches a route. Retry after the `Retry-After` seconds.",
)
QUOTA_EXCEEDED = ApiRefusal(
    429,
    ErrorCode.QUOTA_EXCEEDED,
    "The submission would take this token past the coordinator's quota of unfinished "
    "(queued, assigned or running) tasks (`--max-queued-per-submitter`); nothing was "
    "accepted. Submit again once some have finished.",
)
UNAVAILABLE = ApiRefusal(
    503,
    ErrorCode.UNAVAILABLE,
    "The coordinator's loop has stopped (a storage failure, or shutting down); "
    "nothing was changed.",
)


class AuthRefusedError(Exception):
    """Raised by the auth dependency (``coordinator/auth.py``) to refuse a request
    with :data:`UNAUTHENTICATED` or :data:`FORBIDDEN`; answered by the handler below."""

    def __init__(self, refusal: ApiRefusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.message = message


def refusals(*refused: ApiRefusal) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for a route that can send ``refused`` (and, as every
    route can, :data:`BODY_TOO_LARGE`): one response per status, in the error
    shape, its ``code`` limited to the codes sent with that status."""
    by_status: dict[int, list[ApiRefusal]] = {}
    for refusal in (*refused, BODY_TOO_LARGE):
        by_status.setdefault(refusal.status, []).append(refusal)
    return {status: error_response_doc(group) for status, group in sorted(by_status.items())}


def error_response_doc(group: Sequence[ApiRefusal]) -> dict[str, Any]:
    """The OpenAPI response object for refusals that share a status."""
    codes = list(dict.fromkeys(refusal.code.value for refusal in group))
    return {
        "description": " ".join(f"`{r.code.value}`: {r.when}" for r in group),
        "content": {
            "application/json": {
                "schema": {
                    # The one error shape, with the codes this status can carry here.
                    "allOf": [
                        {"$ref": ERROR_BODY_REF},
                        {
                            "type": "object",
                            "properties": {
                                "error": {
                                    "type": "object",
                                    "properties": {"code": {"enum": codes}},
                                }
                            },
                        },
                    ]
                }
            }
        },
    }


def error_response(
    status: int,
    code: ErrorCode,
    message: str,
    details: Sequence[FieldProblem | RefusedIds | dict[str, Any]] | None = None,
) -> JSONResponse:
    """The response for a refused request. ``details`` are checked against the
    documented shapes (:class:`FieldProblem`, :class:`RefusedIds`): a detail of
    another shape fails here, in the first test that sends it."""
    body = ErrorBody.model_validate(
        {"error": {"code": code, "message": message, "details": list(details or [])}}
    )
    return JSONResponse(status_code=status, content=body.model_dump(mode="json"))


def add_error_handlers(app: FastAPI) -> None:
    """Answer what FastAPI, Starlette and the store raise in the API's error shape.

    Called by :func:`~testfleet.coordinator.app.create_app`. A body that is
    not JSON is ``malformed_body`` (400) on every route, as ``POST /tasks``
    says it; FastAPI would say 422 for broken JSON and 400 for bytes that are
    not text.
    """

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        details = [
            FieldProblem(
                field=".".join(str(p) for p in err.get("loc", ())),
                problem=err.get("msg", ""),
                type=err.get("type", ""),
            )
            for err in errors[:50]
        ]
        broken = next((err for err in errors if err.get("type") == "json_invalid"), None)
        if broken is not None:
            why = broken.get("ctx", {}).get("error", "JSON decode error")
            return MALFORMED_BODY.response(f"the request body is not valid JSON: {why}", details)
        first = details[0] if details else FieldProblem(field="", problem="invalid", type="")
        return INVALID_PARAMETER.response(f"{first.field}: {first.problem}", details)

    @app.exception_handler(AuthRefusedError)
    async def _auth_refused(_: Request, exc: AuthRefusedError) -> JSONResponse:
        response = exc.refusal.response(exc.message)
        if exc.refusal.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(StoreError)
    async def _storage_error(_: Request, exc: StoreError) -> JSONResponse:
        # A read that met a row it cannot decode (a file written by hand or by
        # a build that let a bad value in): say which row, and keep serving.
        log.error("a request failed on the store: %s", exc)
        return STORAGE_ERROR.response(str(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # 404: no such path; 400: a body FastAPI could not read as text; 405.
        code = {404: ErrorCode.NOT_FOUND, 400: ErrorCode.MALFORMED_BODY}.get(
            exc.status_code, ErrorCode.INVALID_PARAMETER
        )
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            # No route matched (a route's own 404 says what it did not find).
            # The path is decoded: an id with "/" in it splits into segments.
            message = (
                f"no such API route: {request.method} {request.url.path[:300]} "
                "(see /docs for the routes; ids cannot contain '/')"
            )
        return error_response(exc.status_code, code, message)
