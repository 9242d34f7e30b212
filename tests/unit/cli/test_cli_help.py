"""``--help`` of every ``testfleet`` command: flags take no value, so none is shown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from testfleet.cli import app


def command_paths(group: object, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield from command_paths(command, (*prefix, name))


ALL_COMMANDS = list(command_paths(typer.main.get_command(app)))


def test_every_command_is_checked() -> None:
    names = {" ".join(path) for path in ALL_COMMANDS}
    assert {"", "wait", "tasks", "worker", "results", "results compare"} <= names


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda path: " ".join(path) or "testfleet")
def test_help_shows_no_bool_metavar(path: tuple[str, ...]) -> None:
    done = CliRunner().invoke(app, [*path, "--help"], terminal_width=160)
    assert done.exit_code == 0, done.output
    assert "--help" in done.stdout
    assert "<bool>" not in done.stdout
    assert "BOOLEAN" not in done.stdout
