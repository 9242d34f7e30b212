"""A task submission's body: parsed (JSON, or YAML when sent as YAML), checked
value by value and then by its models, with every problem named by field path.

Callers: ``POST /api/v1/tasks`` (:mod:`testfleet.coordinator.api`) parses
with :func:`parse_task_body` and documents its body with
:data:`SUBMIT_OPENAPI`. Nothing is accepted unless the whole body is valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import yaml
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from testfleet.coordinator.api_errors import (
    INVALID_TASK,
    MALFORMED_BODY,
    UNSUPPORTED_MEDIA_TYPE,
)
from testfleet.domain.json_values import ValueProblem, json_value_problems
from testfleet.domain.task import TaskSpec

# Two adapters, chosen by the body's shape: a union would report both branches
# failing and label fields with pydantic's internal branch names.
ONE_TASK: TypeAdapter[TaskSpec] = TypeAdapter(TaskSpec)
MANY_TASKS: TypeAdapter[list[TaskSpec]] = TypeAdapter(list[TaskSpec])


def field_path(loc: Sequence[str | int], *, many: bool) -> str:
    """A location in a submission as users write it: ``tasks[3].config.argv[0]``
    (``many``: the body is a list of tasks), or ``config.env.HOME`` for one task."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int) and many and not parts:
            parts.append(f"tasks[{item}]")
        elif isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        else:
            # Keys come from the request: a megabyte-long one is not echoed whole.
            parts.append(item if len(item) <= 100 else item[:97] + "...")
    return ".".join(parts) or "(body)"


def validation_details(exc: ValidationError, *, many: bool) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"field": "tasks[3].timeout_seconds", "problem": ...}``."""
    return [
        {"field": field_path(err["loc"], many=many), "problem": err["msg"], "type": err["type"]}
        for err in exc.errors(include_input=False)[:50]
    ]


def _invalid_task(details: list[dict[str, Any]]) -> JSONResponse:
    first = details[0] if details else {"field": "(body)", "problem": "invalid"}
    return INVALID_TASK.response(
        f"invalid task: {first['field']}: {first['problem']} "
        f"({len(details)} problem(s); nothing was accepted)",
        details,
    )


#: Content types a submission may be sent as YAML with.
YAML_MEDIA_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


def _value_problems(document: Any, raw: bytes, *, is_yaml: bool) -> list[ValueProblem]:
    """What in a submission no store can hold, or would fail only later, on a
    worker (see :mod:`testfleet.domain.json_values`), before the models see it.

    YAML carries inf, nan, huge integers, bytes and lone surrogates, so a YAML
    body is walked value by value. orjson has already refused all of those in
    a JSON body; what is left is a NUL byte, which JSON text can only hold as
    the escape ``\\u0000`` (found by searching the bytes, then walked to name
    the field), and nesting deeper than orjson writes, found by writing it
    (a walk cost about a fifth of parsing 1,000 tasks, measured here).
    """
    if is_yaml or b"\\u0000" in raw:
        return json_value_problems(document, allow_nul=False)
    try:
        orjson.dumps(document)
    except orjson.JSONEncodeError as exc:
        return [ValueProblem((), str(exc))]
    return []


def parse_task_body(
    raw: bytes, content_type: str
) -> tuple[list[TaskSpec] | None, JSONResponse | None]:
    """Parse a submission (JSON, or YAML when sent as YAML): a task document or a list."""
    media = content_type.split(";")[0].strip().lower()
    try:
        if media in YAML_MEDIA_TYPES:
            document: Any = yaml.safe_load(raw.decode("utf-8"))
        elif media in ("application/json", ""):
            document = orjson.loads(raw)
        else:
            return None, UNSUPPORTED_MEDIA_TYPE.response(
                f"Content-Type {media!r} is not accepted; send application/json "
                "(or application/yaml)"
            )
    except (orjson.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, MALFORMED_BODY.response(f"the request body is not valid JSON/YAML: {exc}")
    if not isinstance(document, dict | list):
        return None, INVALID_TASK.response(
            "the body must be a task document (an object) or a list of them, "
            f"got {type(document).__name__}"
        )
    many = isinstance(document, list)
    problems = _value_problems(document, raw, is_yaml=media in YAML_MEDIA_TYPES)
    if problems:
        return None, _invalid_task(
            [
                {"field": field_path(p.path, many=many), "problem": p.problem, "type": "value"}
                for p in problems
            ]
        )
    try:
        specs = (
            MANY_TASKS.validate_python(document)
            if isinstance(document, list)
            else [ONE_TASK.validate_python(document)]
        )
    except ValidationError as exc:
        return None, _invalid_task(validation_details(exc, many=many))
    if not specs:
        return None, INVALID_TASK.response("the list of tasks is empty")
    return specs, None


_TASK_SCHEMA_REF = {"$ref": "#/components/schemas/TaskSpec"}
#: One task document or a non-empty list of them, as JSON or as YAML (the same
#: document written in YAML; the schemas are added by coordinator.openapi).
_TASK_DOCUMENTS = {
    "oneOf": [_TASK_SCHEMA_REF, {"type": "array", "items": _TASK_SCHEMA_REF, "minItems": 1}]
}
SUBMIT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _TASK_DOCUMENTS},
            "application/yaml": {"schema": _TASK_DOCUMENTS},
        },
    }
}
