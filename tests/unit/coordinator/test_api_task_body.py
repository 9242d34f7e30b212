"""parse_task_body's check of values before the models, on the JSON and YAML paths."""

from __future__ import annotations

import orjson

from testfleet.coordinator.task_body import parse_task_body


def refusal(raw: bytes, content_type: str = "application/json") -> dict:
    specs, problem = parse_task_body(raw, content_type)
    assert specs is None
    assert problem is not None
    assert problem.status_code == 422
    body: dict = orjson.loads(bytes(problem.body))["error"]
    return body


def test_a_nul_escape_in_json_is_found_and_named() -> None:
    raw = b'[{"type": "command", "config": {"argv": ["echo", "a\\u0000b"]}}]'
    error = refusal(raw)
    assert error["details"][0]["field"] == "tasks[0].config.argv[1]"
    assert "NUL" in error["details"][0]["problem"]


def test_a_backslash_before_u0000_is_text_not_a_nul() -> None:
    # The bytes hold \\u0000 (an escaped backslash, then "u0000"): no NUL.
    raw = b'{"type": "command", "config": {"argv": ["echo", "\\\\u0000"]}}'
    specs, problem = parse_task_body(raw, "application/json")
    assert problem is None
    assert specs is not None
    assert specs[0].config["argv"][1] == "\\u0000"


def test_json_nested_deeper_than_the_store_writes_is_refused() -> None:
    raw = b'{"type": "simulated", "config": {"x": ' + b"[" * 300 + b"]" * 300 + b"}}"
    error = refusal(raw)
    assert "Recursion limit" in error["details"][0]["problem"]


def test_yaml_is_walked_value_by_value() -> None:
    error = refusal(b"type: simulated\nconfig: {duration_seconds: .inf}\n", "application/yaml")
    assert error["details"][0]["field"] == "config.duration_seconds"
