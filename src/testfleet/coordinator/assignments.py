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
    return Assignment.model_construct(
        attempt_id=attempt.attempt_id,
        attempt=attempt.attempt,
        task=spec,
        completed_tests=sorted(task.reported_tests or ()),
    )
