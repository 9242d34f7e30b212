"""Requirement fallbacks (task slices): the document's checks and which slice is in force."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from testfleet.domain.task import MAX_FALLBACKS, TaskSpec, is_idempotent
from testfleet.domain.task_slices import (
    describe_slice,
    requirements_of_slice,
    slice_expires_at,
    slice_in_force,
    slice_requirements,
)


def spec(**fields: Any) -> TaskSpec:
    document: dict[str, Any] = {"task_id": "t", "type": "simulated", "config": {}}
    document.update(fields)
    return TaskSpec.model_validate(document)


H200 = {"hardware": ["cuda"], "gpu_model": "H200"}
ANY_CUDA = {"hardware": ["cuda"]}


def two_slices() -> TaskSpec:
    return spec(requirements=H200, fallbacks=[{"after_seconds": 600, "requirements": ANY_CUDA}])


def test_the_slice_in_force_moves_on_at_each_expiry_counted_from_submission() -> None:
    task = spec(
        requirements=H200,
        fallbacks=[
            {"after_seconds": 600, "requirements": ANY_CUDA},
            {"after_seconds": 1200, "requirements": {}},
        ],
    )
    assert [slice_in_force(task, 100.0, now) for now in (100, 699.9, 700, 1299, 1300, 9e9)] == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    assert slice_expires_at(task, 100.0, 0) == 700.0
    assert slice_expires_at(task, 100.0, 1) == 1300.0
    assert slice_expires_at(task, 100.0, 2) is None
    assert [r.gpu_model for r in slice_requirements(task)] == ["H200", None, None]
    assert requirements_of_slice(task, 2).hardware == []
    assert describe_slice(task, 0) == "slice 0 of 3 (requirements)"
    assert describe_slice(task, 1) == "slice 1 of 3 (fallbacks[0], after 600 s)"


def test_a_task_without_fallbacks_has_one_slice_forever() -> None:
    task = spec()
    assert task.fallbacks == []
    assert slice_in_force(task, 0.0, 1e12) == 0
    assert slice_expires_at(task, 0.0, 0) is None


def test_fallback_times_must_increase_and_the_error_says_which_and_how() -> None:
    with pytest.raises(ValidationError) as caught:
        spec(
            fallbacks=[
                {"after_seconds": 600, "requirements": ANY_CUDA},
                {"after_seconds": 600, "requirements": {}},
            ]
        )
    message = str(caught.value)
    assert "fallbacks[1].after_seconds is 600 but must be greater than 600" in message
    assert "each after a longer wait" in message
    with pytest.raises(ValidationError, match=r"fallbacks\[0\].after_seconds is 0 but must"):
        spec(fallbacks=[{"after_seconds": 0, "requirements": {}}])


@pytest.mark.parametrize(
    ("fallback", "field", "words"),
    [
        ({"after_seconds": -1, "requirements": {}}, "after_seconds", "greater than or equal to 0"),
        ({"after_seconds": float("inf"), "requirements": {}}, "after_seconds", "finite"),
        ({"after_seconds": True, "requirements": {}}, "after_seconds", "not a boolean"),
        ({"requirements": {}}, "after_seconds", "Field required"),
        ({"after_seconds": 5, "requirements": {"hardwear": ["cuda"]}}, "hardwear", "Extra"),
        ({"after_seconds": 5, "requirement": {}}, "requirement", "Extra"),
    ],
)
def test_a_bad_fallback_names_its_field(fallback: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(fallbacks=[fallback])
    errors = caught.value.errors()
    assert errors[0]["loc"][:2] == ("fallbacks", 0)
    assert field in ".".join(str(p) for p in errors[0]["loc"])
    assert words in str(caught.value)


def test_at_most_eight_fallbacks() -> None:
    ok = [{"after_seconds": 60 * (i + 1), "requirements": {}} for i in range(MAX_FALLBACKS)]
    assert len(spec(fallbacks=ok).fallbacks) == MAX_FALLBACKS
    too_many = [*ok, {"after_seconds": 60 * 100, "requirements": {}}]
    with pytest.raises(ValidationError, match="at most 8 items"):
        spec(fallbacks=too_many)


def test_a_benchmark_device_must_be_offered_by_every_slice() -> None:
    document: dict[str, Any] = {
        "task_id": "b",
        "type": "benchmark",
        "config": {"model": "bert-base-uncased", "device": "cuda"},
        "requirements": {"hardware": ["cuda"]},
        "fallbacks": [{"after_seconds": 60, "requirements": {"hardware": ["rocm"]}}],
    }
    with pytest.raises(ValidationError, match=r"fallbacks\[0\].requirements.hardware does not"):
        TaskSpec.model_validate(document)


def test_idempotent_defaults_by_type_and_can_be_set() -> None:
    assert not is_idempotent(spec(type="command", config={"argv": ["true"]}))
    assert is_idempotent(spec(type="command", config={"argv": ["true"]}, idempotent=True))
    assert is_idempotent(spec())
    assert not is_idempotent(spec(idempotent=False))


def test_expected_seconds_is_a_positive_finite_number() -> None:
    assert spec(expected_seconds=12.5).expected_seconds == 12.5
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValidationError, match="expected_seconds"):
            spec(expected_seconds=bad)
