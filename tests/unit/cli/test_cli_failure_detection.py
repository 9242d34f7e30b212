"""``testfleet coordinator --disconnect-grace/--max-lost-attempts`` (issue 12):
the values reach the coordinator's settings, and bad ones are refused naming
the flag, never with a traceback."""

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
    code, output = coordinator(tmp_path, "--disconnect-grace", "1.5", "--max-lost-attempts", "5")
    assert code == 0, output
    assert seen[0].disconnect_grace_seconds == 1.5
    assert seen[0].max_lost_attempts == 5
    code, _ = coordinator(tmp_path)
    assert seen[1].disconnect_grace_seconds == CoordinatorSettings().disconnect_grace_seconds


@pytest.mark.parametrize(
    ("flag", "value"), [("--disconnect-grace", "-1"), ("--max-lost-attempts", "-2")]
)
def test_negative_values_are_refused_naming_the_flag(tmp_path: Path, flag: str, value: str) -> None:
    code, output = coordinator(tmp_path, flag, value)
    assert code == 2
    assert flag in output
