"""Reading task documents from files for ``testfleet submit``.

A file holds one task document (SEED.md 5.2) or a list of them, as JSON or
YAML (chosen by extension; ``-`` reads standard input and accepts either).
Only the shape is checked here; the coordinator validates every field and
names any problem.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import yaml


class TaskFileError(ValueError):
    """A file that cannot be read or is not a task document or list of them."""


def load_task_documents(path: str) -> list[dict[str, Any]]:
    """Return the task documents in ``path`` ('-' for stdin)."""
    if path == "-":
        text = sys.stdin.read()
        name = "<stdin>"
        as_yaml = not text.lstrip().startswith(("{", "["))
    else:
        file = Path(path)
        if not file.is_file():
            raise TaskFileError(f"{path}: no such file")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TaskFileError(f"{path}: cannot read: {exc}") from None
        name = path
        as_yaml = file.suffix.lower() in (".yaml", ".yml")
    try:
        document: Any = yaml.safe_load(text) if as_yaml else orjson.loads(text)
    except (yaml.YAMLError, orjson.JSONDecodeError) as exc:
        kind = "YAML" if as_yaml else "JSON"
        raise TaskFileError(f"{name}: not valid {kind}: {exc}") from None
    documents = document if isinstance(document, list) else [document]
    for index, item in enumerate(documents):
        if not isinstance(item, dict):
            raise TaskFileError(
                f"{name}: item {index} is a {type(item).__name__}, "
                "expected a task document (an object)"
            )
    return documents
