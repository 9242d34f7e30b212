"""Reading task documents from files for ``testfleet submit``.

A file holds one task document (docs/formats.md) or a list of them, as JSON or
YAML (chosen by extension; ``-`` reads standard input and accepts either). A
YAML file may hold several documents separated by ``---``. Only the shape is
checked here; the coordinator validates every field and names any problem.
Errors name the file and, where the parser knows it, the line.
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
    if not text.strip():
        raise TaskFileError(f"{name}: no task documents (the file is empty)")
    parsed = _parse_yaml(name, text) if as_yaml else [_parse_json(name, text)]
    documents: list[Any] = []
    for document in parsed:
        documents += document if isinstance(document, list) else [document]
    if not documents:
        raise TaskFileError(f"{name}: no task documents")
    for index, item in enumerate(documents):
        if not isinstance(item, dict):
            raise TaskFileError(
                f"{name}: item {index} is a {type(item).__name__}, "
                "expected a task document (an object)"
            )
    return documents


def _parse_json(name: str, text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise TaskFileError(f"{name} line {exc.lineno}: not valid JSON: {exc.msg}") from None


def _parse_yaml(name: str, text: str) -> list[Any]:
    """Every YAML document in ``text``; empty ones (only comments) are skipped."""
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(name, text, exc) from None
    except yaml.YAMLError as exc:
        raise TaskFileError(f"{name}: not valid YAML: {exc}") from None


def _yaml_error(name: str, text: str, exc: yaml.MarkedYAMLError) -> TaskFileError:
    """Name the file and line; a tab (YAML forbids them where it needs spaces, and
    editors hide them) gets its own plain message instead of PyYAML's ``found
    character '\\t' that cannot start any token``."""
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return TaskFileError(f"{name}: not valid YAML: {exc.problem or exc}")
    where = f"{name} line {mark.line + 1}"
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    if mark.column < len(line) and line[mark.column] == "\t":
        if not line[: mark.column].strip(" \t-"):
            return TaskFileError(f"{where}: tabs are not allowed in YAML indentation; use spaces")
        return TaskFileError(
            f"{where} column {mark.column + 1}: a tab where YAML needs a space; use spaces"
        )
    problem = exc.problem or "cannot be parsed"
    context = f" ({exc.context})" if exc.context else ""
    return TaskFileError(f"{where}: not valid YAML: {problem}{context}")
