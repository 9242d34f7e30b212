"""``testfleet coordinator --speculation/--no-speculation, --speculation-factor,
--speculation-min-seconds`` (issue 14): the values reach the settings, and bad ones are
refused naming the flag, never with a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.coordinator.settings import CoordinatorSettings


def coordinator(tmp_path: Path, *extra: str) -> tuple[int, str]:
    done = CliRunner().invoke(
        app, ["coordinator", "--db", str(tmp_path / "c.duckdb"), "--port", "1", *extra]
    )
    assert "Traceback" not in done.output
    return done.exit_code, done.output


def test_the_flags_reach_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[CoordinatorSettings] = []

    def fake_run(*_: Any, settings: CoordinatorSettings, **__: Any) -> None:
        seen.append(settings)

    monkeypatch.setattr("testfleet.coordinator.app.run_coordinator", fake_run)
    code, output = coordinator(
        tmp_path, "--no-speculation", "--speculation-factor", "3", "--speculation-min-seconds", "5"
    )
    assert code == 0, output
    assert (seen[0].speculation_enabled, seen[0].speculation_factor) == (False, 3.0)
    assert seen[0].speculation_min_seconds == 5.0
    code, _ = coordinator(tmp_path)
    assert (seen[1].speculation_enabled, seen[1].speculation_factor) == (True, 2.0)
    assert seen[1].speculation_min_seconds == 30.0


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--speculation-factor", "0.5"),
        ("--speculation-factor", "nan"),
        ("--speculation-min-seconds", "-1"),
        ("--speculation-min-seconds", "inf"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(tmp_path: Path, flag: str, value: str) -> None:
    code, output = coordinator(tmp_path, flag, value)
    assert code != 0
    assert flag in output
