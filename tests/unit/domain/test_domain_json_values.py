"""The edge check of plain JSON values (``testfleet.domain.json_values``).

The contract: whatever the check lets through, the store's encoder (orjson)
writes and reads back unchanged; whatever it refuses is named by its path.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from testfleet.domain.json_values import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    json_value_problems,
    shorten,
)


@pytest.mark.parametrize(
    ("document", "path", "words"),
    [
        ({"a": float("inf")}, ("a",), "inf is not a finite number"),
        ({"a": [1, float("-inf")]}, ("a", 1), "-inf is not a finite number"),
        ({"a": float("nan")}, ("a",), "nan is not a finite number"),
        ({"a": INT64_MAX + 1}, ("a",), "out of range"),
        ({"a": INT64_MIN - 1}, ("a",), "out of range"),
        ({"a": b"raw"}, ("a",), "a bytes is not a JSON value"),
        ({"a": {1: "x"}}, ("a",), "key 1 is not a string"),
        ({"a": "\ud800"}, ("a",), "lone surrogate"),
        ({"\ud800": 1}, ("\ud800",), "the key is not valid Unicode"),
    ],
)
def test_each_kind_of_bad_value_is_named_with_its_path(
    document: Any, path: tuple[Any, ...], words: str
) -> None:
    (problem,) = json_value_problems(document)
    assert problem.path == path
    assert words in problem.problem


def test_nul_bytes_are_refused_only_when_asked() -> None:
    document = {"config": {"argv": ["echo", "a\x00b"], "env": {"K": "v"}}}
    assert json_value_problems(document) == []
    (problem,) = json_value_problems(document, allow_nul=False)
    assert problem.path == ("config", "argv", 1)
    assert "NUL" in problem.problem
    (key,) = json_value_problems({"env": {"A\x00": "v"}}, allow_nul=False)
    assert key.path == ("env", "A\x00")


def test_the_limits_themselves_pass() -> None:
    assert json_value_problems([INT64_MAX, INT64_MIN, 1.7976931348623157e308, -0.0, True]) == []


def test_deep_nesting_is_refused_without_recursing() -> None:
    document: Any = "leaf"
    for _ in range(MAX_DEPTH + 5):
        document = [document]
    (problem,) = json_value_problems(document)
    assert len(problem.path) == MAX_DEPTH + 1
    # Far deeper than Python's recursion limit: the check walks with a stack.
    for _ in range(50_000):
        document = {"k": document}
    assert json_value_problems(document)


def test_problems_are_capped_and_in_document_order() -> None:
    problems = json_value_problems([float("nan")] * 100, limit=5)
    assert [p.path for p in problems] == [(0,), (1,), (2,), (3,), (4,)]


def test_shorten_keeps_messages_short() -> None:
    assert shorten("x" * 100_000).endswith("x'")
    assert len(shorten("x" * 100_000)) == 40
    assert shorten(12) == "12"


#: Leaves a hostile peer can put in a YAML body or a MessagePack frame.
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["\x00", "a\ud800b", "\udfff"]),
    st.binary(max_size=5),
)
_documents = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), children, max_size=4),
    ),
    max_leaves=25,
)


@given(_documents)
def test_what_passes_is_stored_and_read_back_unchanged(document: Any) -> None:
    if json_value_problems(document):
        return
    assert orjson.loads(orjson.dumps(document)) == document


@given(_documents)
def test_what_fails_to_encode_is_always_refused(document: Any) -> None:
    try:
        orjson.loads(orjson.dumps(document))
    except (TypeError, orjson.JSONEncodeError):
        assert json_value_problems(document)
