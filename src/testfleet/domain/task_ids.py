"""What a task id may be: one path segment of the API, safe to type and to quote.

Callers: :class:`testfleet.domain.task.TaskSpec` refuses other ids at
submission; the REST client (:mod:`testfleet.client`) says at once that no
task can have such an id, where the coordinator could only answer that no
route matched. Kept apart from ``task.py`` so the client can check an id
without importing pydantic.
"""

from __future__ import annotations

import re

#: Letters, digits and ``. _ : @ + -``, starting with a letter or digit: an id
#: is a path segment of the API (``/api/v1/tasks/{id}``), so ``/`` and ``..``
#: could make a task impossible to read, cancel or wait on; nor may it hold
#: spaces, NUL or other control characters.
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$"
TASK_ID_RULE = (
    "a task id is 1 to 200 letters, digits and . _ : @ + -, starting with a letter or digit"
)
_TASK_ID = re.compile(TASK_ID_PATTERN)


def is_task_id(text: str) -> bool:
    """Whether ``text`` can be a task's id."""
    return _TASK_ID.fullmatch(text) is not None
