"""The coordinator's OpenAPI document (``/openapi.json``): FastAPI's, made to say
what the API really sends.

Callers: :func:`testfleet.coordinator.app.create_app` installs
:func:`openapi_document` as the app's ``openapi()``; ``/docs`` shows it and
``tests/unit/coordinator/test_api_fuzz.py`` fuzzes the app against it. What
it changes in FastAPI's document, and why:

- The task submission body is hand-written (``SUBMIT_OPENAPI`` in
  :mod:`~testfleet.coordinator.task_body`: the route reads JSON or YAML itself),
  so the schemas it refers to (``TaskSpec`` and its parts) are added here.
- Every error is ``{"error": {"code", "message", "details"}}``; routes refer
  to ``ErrorBody`` (see :mod:`~testfleet.coordinator.api_errors`), added here.
- FastAPI documents a 422 ``HTTPValidationError`` (``{"detail": [...]}``) on
  every route with parameters. This API never sends that shape: the routes
  that can fail validation declare their own 422, and on the others (a plain
  ``str`` path parameter cannot fail) it is removed.
- Some answers come before any route runs, so FastAPI cannot know them; every
  operation they can reach declares them, merged into what the route declares
  for the same status: the body-size limit's 413; the rate limit's 429 (every
  operation but health, :data:`~testfleet.coordinator.limits.RATE_EXEMPT`); and,
  from the HTTP protocol itself (:mod:`~testfleet.coordinator.http_protocol`),
  the header timeout's 408 (every operation) and the connection cap's 503
  (every operation but health, which the cap lets through).
- Every operation needs a bearer token (``components.securitySchemes``, from
  ``coordinator/auth.py``) except those in :data:`PUBLIC_OPERATIONS`, where
  the token is optional.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from testfleet.coordinator.api_errors import (
    BODY_TOO_LARGE,
    RATE_LIMITED,
    ApiRefusal,
    error_response_doc,
)
from testfleet.coordinator.api_models import ErrorBody
from testfleet.coordinator.http_protocol import CONNECTION_CAP, HEADER_TIMEOUT
from testfleet.coordinator.limits import HEALTH_PATH, LIVE_PATH, RATE_EXEMPT
from testfleet.domain.task import TaskSpec

REF_TEMPLATE = "#/components/schemas/{model}"
#: What FastAPI calls its own validation error body and the items of its list.
_FASTAPI_422_SCHEMAS = ("HTTPValidationError", "ValidationError")
#: Operations that answer without a token (every other one needs the bearer scheme).
PUBLIC_OPERATIONS = ((HEALTH_PATH, "get"), (LIVE_PATH, "get"))
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once and kept (as FastAPI's own ``openapi()``)."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
            servers=app.servers,
            separate_input_output_schemas=app.separate_input_output_schemas,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for model in (TaskSpec, ErrorBody):
            add_model_schemas(schemas, model)
        for path, path_item in document.get("paths", {}).items():
            for method in _METHODS:
                if method in path_item:
                    _say_what_is_sent(path_item[method]["responses"], path)
        for name in _FASTAPI_422_SCHEMAS:
            schemas.pop(name, None)
        for path, method in PUBLIC_OPERATIONS:
            operation = document.get("paths", {}).get(path, {}).get(method)
            if operation is not None:
                # A token is optional here (it adds details): `{}` means "none".
                operation["security"] = [{}, *operation.get("security", [])]
        app.openapi_schema = document
    return app.openapi_schema


def add_model_schemas(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    """Add ``model``'s schema and those it refers to under their own names.

    A name FastAPI already published for a response model must mean the same
    schema: two different ones under one name would make one of them wrong.
    """
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    for name, definition in {**schema.pop("$defs", {}), model.__name__: schema}.items():
        published = schemas.setdefault(name, definition)
        if published != definition:
            raise RuntimeError(f"two different OpenAPI schemas are both named {name!r}")


def _say_what_is_sent(responses: dict[str, Any], path: str) -> None:
    """Drop FastAPI's own 422 and declare what the layers in front of the routes
    can answer at ``path`` (see the module docstring)."""
    default_422 = responses.get("422", {})
    sent_shape = default_422.get("content", {}).get("application/json", {}).get("schema", {})
    if sent_shape.get("$ref", "").endswith("/HTTPValidationError"):
        del responses["422"]
    # A route declared with api_errors.refusals() has the 413 already.
    declare(responses, BODY_TOO_LARGE)
    declare(responses, HEADER_TIMEOUT)
    if path not in RATE_EXEMPT:
        declare(responses, RATE_LIMITED)
    if path not in (HEALTH_PATH, LIVE_PATH):
        declare(responses, CONNECTION_CAP)


def declare(responses: dict[str, Any], refusal: ApiRefusal) -> None:
    """Add ``refusal`` to an operation's ``responses``: a new response for its
    status, or its code and text added to the error response the route already
    declares for that status (the submit route's 429 ``quota_exceeded`` and the
    rate limit's 429 are one response with both codes)."""
    status = str(refusal.status)
    declared = responses.get(status)
    if declared is None:
        responses[status] = error_response_doc([refusal])
        return
    try:
        schema = declared["content"]["application/json"]["schema"]["allOf"][1]
        codes: list[str] = schema["properties"]["error"]["properties"]["code"]["enum"]
    except (KeyError, IndexError, TypeError):
        raise RuntimeError(
            f"the {status} this operation declares is not an error response; "
            f"{refusal.code.value} cannot be added to it"
        ) from None
    if refusal.code.value not in codes:
        codes.append(refusal.code.value)
    said = f"`{refusal.code.value}`: {refusal.when}"
    if said not in declared.get("description", ""):
        declared["description"] = f"{declared.get('description', '')} {said}".strip()
