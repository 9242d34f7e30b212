"""Every number a peer can send is bounded: a guard for models written later.

The edge check (``domain/json_values.py``) stops what pydantic would never
see; the models stop the rest. An ``int`` field without an upper bound would
turn ``"99999999999999999999"`` into an integer no store column or encoder
holds, and a model that allows ``inf`` would store it as ``null`` (issue 8).
These tests walk every model a worker frame or a task document can reach.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, TypeAdapter

from testfleet.domain.benchmark import BenchmarkOutcome
from testfleet.domain.json_values import INT64_MAX, INT64_MIN
from testfleet.domain.pytest_tasks import TestChunkOutcome
from testfleet.domain.task import TaskSpec
from testfleet.domain.task_configs import config_model_for, supported_task_types
from testfleet.protocol.messages import MESSAGE_ADAPTER, Message

#: Everything that crosses the edge: frames, task documents with every config,
#: and the result documents the coordinator validates again.
ROOTS: list[type[BaseModel]] = [
    TaskSpec,
    BenchmarkOutcome,
    TestChunkOutcome,
    *(config_model_for(kind) for kind in supported_task_types()),
]


def schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "Message", MESSAGE_ADAPTER.json_schema()
    for model in ROOTS:
        yield model.__name__, TypeAdapter(model).json_schema()


def integers(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every integer schema inside ``node``, with where it is."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            yield path, node
        for key, value in node.items():
            yield from integers(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from integers(value, f"{path}[{index}]")


def test_every_integer_a_peer_sends_has_bounds_within_64_bits() -> None:
    unbounded = []
    for name, schema in schemas():
        for path, node in integers(schema, name):
            top = node.get("maximum", node.get("exclusiveMaximum"))
            bottom = node.get("minimum", node.get("exclusiveMinimum"))
            if top is None or top > INT64_MAX or bottom is None or bottom < INT64_MIN:
                unbounded.append(path)
    assert unbounded == []


def models(root: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[type[BaseModel]]:
    if root in seen:
        return
    seen.add(root)
    yield root
    for field in root.model_fields.values():
        for inner in _types(field.annotation):
            yield from models(inner, seen)


def _types(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _types(argument)


def test_every_model_a_peer_reaches_refuses_infinity_and_nan() -> None:
    seen: set[type[BaseModel]] = set()
    # Message is Annotated[Hello | Welcome | ..., discriminator]: its members.
    message_models = list(typing.get_args(typing.get_args(Message)[0]))
    reachable = [model for root in [*message_models, *ROOTS] for model in models(root, seen)]
    assert len(reachable) > 20  # the walk found the models, not nothing
    allowing = [m.__name__ for m in reachable if m.model_config.get("allow_inf_nan", True)]
    assert allowing == []
