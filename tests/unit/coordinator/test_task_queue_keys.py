"""TaskQueue remembers match keys by requirements object, and never gives a wrong one.

``TaskQueue.push`` works a task's match key out once and returns it; tasks
that share one requirements object (copies of one spec, the simulator's
trace) share the key without dumping the requirements to JSON again. The
memo must tell task types apart, and a new object with other requirements
must get its own key, however full the memo is.
"""

from __future__ import annotations

import pytest

import testfleet.coordinator.task_queue as task_queue
from testfleet.coordinator.task_queue import TaskQueue, match_key
from testfleet.domain.enums import HardwareKind
from testfleet.domain.task import Requirements, TaskSpec


def spec(task_id: str, requirements: Requirements, task_type: str = "simulated") -> TaskSpec:
    config = {"argv": ["true"]} if task_type == "command" else {}
    document = {"task_id": task_id, "type": task_type, "config": config}
    # The same requirements object in every spec made with it, as copies of one spec share it.
    return TaskSpec.model_validate(document).model_copy(update={"requirements": requirements})


def test_push_returns_the_match_key() -> None:
    queue = TaskQueue()
    cuda = Requirements(hardware=[HardwareKind.CUDA])
    first = spec("t1", cuda)
    assert queue.push(first, 0.0) == match_key(first)
    assert queue.push(spec("t2", cuda), 0.0) == match_key(first)
    assert set(queue.key_requirements()) == {match_key(first)}


def test_one_requirements_object_under_two_task_types_gives_two_keys() -> None:
    queue = TaskQueue()
    shared = Requirements(min_memory_gb=8)
    simulated = queue.push(spec("t1", shared), 0.0)
    command = queue.push(spec("t2", shared, "command"), 0.0)
    assert simulated != command
    assert command == match_key(spec("t3", shared, "command"))


def test_a_full_memo_still_gives_every_object_its_own_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(task_queue, "_KEY_MEMO_SIZE", 3)
    queue = TaskQueue()
    keys = []
    for n in range(10):
        requirements = Requirements(min_memory_gb=n)
        keys.append(queue.push(spec(f"t{n}", requirements), 0.0))
        assert keys[-1] == match_key(spec("x", requirements))
    assert len(set(keys)) == 10
    assert len(queue._key_memo) <= 3
