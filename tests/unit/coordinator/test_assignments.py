"""An attempt's ``assign`` entry is built without validation (its spec was
validated at the edge) and without ``model_construct``'s generic walk over the
fields: the result must be the model ``model_construct`` gives, attribute by
attribute, and the same on the wire."""

from __future__ import annotations

from testfleet.coordinator import assignments
from testfleet.coordinator.assignments import assignment_for, slice_resources
from testfleet.domain.enums import AttemptStatus, TaskStatus
from testfleet.domain.records import AttemptRecord, TaskRecord
from testfleet.domain.resources import NO_RESOURCES, ResourceAmounts
from testfleet.domain.task import TaskSpec
from testfleet.domain.task_slices import requirements_of_slice
from testfleet.protocol.messages import Assign, Assignment


def task_and_attempt(
    document: dict[str, object], slice_index: int = 0, reported: set[str] | None = None
) -> tuple[TaskRecord, AttemptRecord]:
    spec = TaskSpec.model_validate({"task_id": "t1", "type": "simulated", **document})
    task = TaskRecord(spec=spec, status=TaskStatus.ASSIGNED, create_time=0.0, queued_at=0.0)
    task.reported_tests = reported
    attempt = AttemptRecord(
        attempt_id=7,
        task_id="t1",
        worker_id="w1",
        attempt=2,
        status=AttemptStatus.ASSIGNED,
        start_time=1.0,
        slice_index=slice_index,
    )
    return task, attempt


def constructed(task: TaskRecord, attempt: AttemptRecord) -> Assignment:
    spec = task.spec
    if attempt.slice_index:
        spec = spec.model_copy(
            update={"requirements": requirements_of_slice(spec, attempt.slice_index)}
        )
    return Assignment.model_construct(
        attempt_id=attempt.attempt_id,
        attempt=attempt.attempt,
        task=spec,
        completed_tests=sorted(task.reported_tests or ()),
    )


def assert_same(built: Assignment, expected: Assignment) -> None:
    assert type(built) is Assignment
    assert built == expected
    assert built.__dict__ == expected.__dict__
    assert list(built.__dict__) == list(expected.__dict__)  # field order: the wire's
    assert built.model_fields_set == expected.model_fields_set
    assert built.__pydantic_extra__ == expected.__pydantic_extra__
    assert built.__pydantic_private__ == expected.__pydantic_private__
    assert built.model_dump_json() == expected.model_dump_json()
    assert Assign(assignments=[built]).model_dump_json() == (
        Assign(assignments=[expected]).model_dump_json()
    )


def test_an_assignment_is_what_model_construct_gives() -> None:
    task, attempt = task_and_attempt({"config": {"seed": 3}}, reported={"b::t", "a::t"})
    built = assignment_for(task, attempt)
    assert_same(built, constructed(task, attempt))
    assert built.completed_tests == ["a::t", "b::t"]
    # Each assignment has its own fields-set (pydantic may change one in place).
    assert built.model_fields_set is not assignment_for(task, attempt).model_fields_set


def test_a_fallback_slice_is_sent_as_the_requirements() -> None:
    task, attempt = task_and_attempt(
        {
            "requirements": {"hardware": ["cuda"]},
            "fallbacks": [{"after_seconds": 60, "requirements": {"hardware": ["cpu"]}}],
        },
        slice_index=1,
    )
    built = assignment_for(task, attempt)
    assert_same(built, constructed(task, attempt))
    assert built.task.requirements == task.spec.fallbacks[0].requirements


def test_a_task_that_reserves_nothing_holds_the_shared_zero() -> None:
    plain, _ = task_and_attempt({})
    assert slice_resources(plain, 0) is NO_RESOURCES
    reserving, _ = task_and_attempt({"requirements": {"resources": {"cpu_cores": 2}}})
    assert slice_resources(reserving, 0) == ResourceAmounts(0, 2, 0)


def test_the_direct_path_is_the_one_taken() -> None:
    """The checks at import hold for today's ``Assignment`` (else the tests above
    would only be testing ``model_construct`` against itself)."""
    assert assignments._DIRECT
