"""What an attempt is sent and holds: its ``assign`` entry and the resources it
reserves, both under the requirement slice it was placed by.

Callers: :class:`~testfleet.coordinator.task_lifecycle.TaskLifecycle`, when it
opens an attempt (a placement) or a straggler's speculative copy. A task with
fallbacks (``domain/task_slices.py``) may be placed under a later slice than
its own ``requirements``; the worker must be told, and hold it to, that one.
"""

from __future__ import annotations

from testfleet.domain.records import AttemptRecord, TaskRecord
from testfleet.domain.resources import ResourceAmounts
from testfleet.domain.task import TaskSpec
from testfleet.domain.task_slices import requirements_of_slice
from testfleet.protocol.messages import Assignment


def slice_resources(task: TaskRecord, slice_index: int) -> ResourceAmounts:
    """What an attempt placed under ``slice_index`` reserves on its worker."""
    return requirements_of_slice(task.spec, slice_index).resources.amounts()


def assignment_for(task: TaskRecord, attempt: AttemptRecord) -> Assignment:
    """The ``assign`` entry for ``attempt``. A task placed under a fallback slice is sent
    with that slice's requirements as its ``requirements``: the worker holds a task to
    the resources there, and must hold it to those it was placed by."""
    spec = task.spec
    if attempt.slice_index:
        spec = spec.model_copy(
            update={"requirements": requirements_of_slice(spec, attempt.slice_index)}
        )
    # Built without validation: every field comes from this state (the spec was
    # validated at the edge), and validating re-ran the spec's config check per
    # assignment (15% of a 10,000-worker simulation's time).
    return _trusted_assignment(
        attempt.attempt_id, attempt.attempt, spec, sorted(task.reported_tests or ())
    )


_ASSIGNMENT_FIELDS = frozenset(Assignment.model_fields)
# What ``Assignment.model_construct`` leaves on an instance given every field,
# set directly: its generic walk over the fields (aliases, defaults) cost 3 of
# the 5 us of building an assignment (issue 14's simulator aim). Valid only
# while ``Assignment`` has exactly these four fields and no aliases, private
# attributes or post-init hook: should that change, ``model_construct`` is
# used again (the check runs once, at import). The result is checked against
# model_construct's, attribute by attribute, in tests/unit/coordinator/.
_DIRECT = (
    {"attempt_id", "attempt", "task", "completed_tests"} == _ASSIGNMENT_FIELDS
    and all(
        f.alias is None and f.validation_alias is None for f in Assignment.model_fields.values()
    )
    and not Assignment.__private_attributes__
    and not Assignment.__pydantic_post_init__
    and Assignment.model_config.get("extra") != "allow"
)
_new_assignment = Assignment.__new__
_set = object.__setattr__


def _trusted_assignment(
    attempt_id: int, attempt: int, task: TaskSpec, completed_tests: list[str]
) -> Assignment:
    """``Assignment.model_construct`` of these (every field), trusted as they are."""
    if not _DIRECT:
        return Assignment.model_construct(
            attempt_id=attempt_id, attempt=attempt, task=task, completed_tests=completed_tests
        )
    assignment = _new_assignment(Assignment)
    _set(
        assignment,
        "__dict__",
        {
            "attempt_id": attempt_id,
            "attempt": attempt,
            "task": task,
            "completed_tests": completed_tests,
        },
    )
    _set(assignment, "__pydantic_fields_set__", set(_ASSIGNMENT_FIELDS))
    _set(assignment, "__pydantic_extra__", None)
    _set(assignment, "__pydantic_private__", None)
    return assignment
