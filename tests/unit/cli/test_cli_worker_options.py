"""``testfleet worker --allow-types``: bad values are one clear line, before anything starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from testfleet.cli import app


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("test,shell", "unknown task type 'shell'; valid: command, simulated, test, benchmark"),
        (",", "--allow-types is empty: give one or more of command, simulated, test, benchmark"),
    ],
)
def test_a_bad_allow_types_is_one_line_naming_the_valid_types(value: str, said: str) -> None:
    done = CliRunner().invoke(
        app, ["worker", "--coordinator", "http://127.0.0.1:9", "--allow-types", value]
    )
    assert done.exit_code == 2
    assert said in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.output


def test_the_help_describes_allow_types() -> None:
    done = CliRunner().invoke(app, ["worker", "--help"])
    assert done.exit_code == 0
    assert "--allow-types" in done.stdout
