"""Plain JSON values: the check every document from outside passes before its model.

Callers: the REST API checks submitted task documents
(:func:`testfleet.coordinator.api.parse_task_body`), and the worker-channel
codec decoded frames (:func:`testfleet.protocol.codec.decode`), before
pydantic validates them. A problem found here is refused like any other
invalid field: a 422 naming the field, or an ``error`` frame naming it. Both
walk what YAML or MessagePack brought; JSON text has been through orjson,
which refuses most of it already, and is checked more cheaply there (see
each caller).

Why a check of its own. JSON text is not the only way in: YAML bodies and
MessagePack frames carry what JSON cannot — ``inf`` and ``nan``, integers
past 64 bits, bytes, non-string keys, lone surrogates. Free-form parts of the
models (a task's ``config``, a result's ``results`` and ``hardware_metrics``)
take any value, and the coordinator stores every document with orjson in
DuckDB, which writes ``inf`` and ``nan`` as ``null`` (a row that then no
longer reads back, so a restart fails on it) and refuses the rest outright (a
commit that fails stops the coordinator). Everything past this check is a
value orjson writes and reads back unchanged.

The typed fields are guarded by their models as well: every wire model
refuses non-finite floats (``allow_inf_nan=False``) and bounds its integers
(:data:`Int64`), so a number that passes here as a float cannot become an
out-of-range integer there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: Deeper documents are refused: nothing testfleet reads nests this far, and
#: recursion in the encoders below must stay bounded.
MAX_DEPTH = 64
#: Problems reported per document (the first ones; a broken document has many).
MAX_PROBLEMS = 20

#: An integer any store column, orjson and MessagePack all hold exactly.
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]

#: A path into a document: keys and list indexes, outermost first.
Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ValueProblem:
    """One value that is not plain JSON, where it is, and what is wrong with it."""

    path: Path
    problem: str


def json_value_problems(
    document: object, *, allow_nul: bool = True, limit: int = MAX_PROBLEMS
) -> list[ValueProblem]:
    """Every value in ``document`` that is not plain, storable JSON (up to ``limit``).

    Refused: floats that are not finite, integers outside 64 bits, strings
    that are not valid Unicode (lone surrogates), dict keys that are not
    strings, any other type (bytes, MessagePack extension types), nesting
    deeper than :data:`MAX_DEPTH`, and, when ``allow_nul`` is false, NUL bytes
    in strings and keys (task documents: no program argument, environment
    value or path can hold one, so it would only fail later, on a worker).
    """
    problems: list[ValueProblem] = []
    # Depth-first with an explicit stack: a hostile document cannot make the
    # check itself recurse too deep.
    stack: list[tuple[object, Path]] = [(document, ())]
    while stack and len(problems) < limit:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            problems.append(ValueProblem(path, f"nested deeper than {MAX_DEPTH} levels"))
            continue
        problem = _scalar_problem(value, allow_nul)
        if problem is not None:
            problems.append(ValueProblem(path, problem))
        elif isinstance(value, dict):
            items: list[tuple[object, Path]] = []
            for key, item in value.items():
                if not isinstance(key, str):
                    problems.append(
                        ValueProblem(path, f"key {shorten(key)} is not a string; keys must be")
                    )
                    continue
                key_problem = _string_problem(key, allow_nul)
                if key_problem is not None:
                    problems.append(ValueProblem((*path, key), f"the key {key_problem}"))
                    continue
                items.append((item, (*path, key)))
            stack.extend(reversed(items))
        elif isinstance(value, list | tuple):
            stack.extend((item, (*path, index)) for index, item in reversed(list(enumerate(value))))
    return problems[:limit]


def _scalar_problem(value: object, allow_nul: bool) -> str | None:
    """What is wrong with a leaf value; None for a good leaf or a container."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return None
        return (
            f"integer {shorten(value)} is out of range: numbers must fit in 64 bits "
            f"({INT64_MIN} to {INT64_MAX})"
        )
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    if isinstance(value, str):
        return _string_problem(value, allow_nul)
    if isinstance(value, dict | list | tuple):
        return None
    return f"a {type(value).__name__} is not a JSON value (use a string, number, list or object)"


def _string_problem(text: str, allow_nul: bool) -> str | None:
    if not allow_nul and "\x00" in text:
        return (
            "contains a NUL byte (\\x00), which no program argument, environment value "
            "or path can hold"
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (it holds a lone surrogate)"
    return None


def shorten(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for an error message that quotes
    a value from outside (which may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"
