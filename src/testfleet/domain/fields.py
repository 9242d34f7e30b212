"""Constrained field types shared by the task config models.

Kept apart from ``task_configs`` (which imports every config model to register
it) so a config model's own module can use them without an import cycle.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

#: An environment variable's name, as a task's ``env`` may set it.
EnvName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
