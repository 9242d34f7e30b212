"""``make``'s first-run install: it must say what it installs and never run pip silently.

A fresh machine spends minutes in this step before ``make demo`` prints
anything of its own; with ``pip --quiet`` that looked like a hang. The test
reads the commands make would run (``make -n``), so nothing is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def planned_install_commands(tmp_path: Path) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("needs make")
    done = subprocess.run(
        [
            "make",
            "-n",
            "-B",
            "-C",
            str(ROOT),
            f"VENV={tmp_path / 'venv'}",
            str(tmp_path / "venv" / ".installed"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = [line.strip() for line in done.stdout.splitlines()]
    return [line for line in lines if line and not line.startswith(("make:", "make["))]


def test_every_pip_step_is_announced_and_shows_pips_progress(tmp_path: Path) -> None:
    commands = planned_install_commands(tmp_path)
    pip_steps = [i for i, command in enumerate(commands) if " -m pip install" in command]
    assert len(pip_steps) >= 3, commands
    for index in pip_steps:
        command = commands[index]
        assert "--quiet" not in command.split(), command
        assert " -q " not in f" {command} ", command
        assert "--progress-bar off" not in command, command
        # The line before each pip step says what is being installed.
        assert commands[index - 1].startswith("echo "), (commands[index - 1], command)
    assert commands[0].startswith("echo "), "nothing is said before the first step"
