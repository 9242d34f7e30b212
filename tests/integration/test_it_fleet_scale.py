"""benchmarks/fleet_scale.py as a user runs it, at a small size: every phase runs,
including the SIGKILL reconnect storm, and its check finds every task with exactly
one outcome. (The figures themselves are not asserted: no test depends on speed.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet_scale.py"


def run(tmp_path: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    # The run's folder (DuckDB file, logs, tokens) goes under the test's tmp_path.
    env = os.environ | {"TMPDIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_a_small_fleet_goes_through_every_phase_and_loses_nothing(tmp_path: Path) -> None:
    done = run(
        tmp_path,
        *("--workers", "12", "--hosts", "2", "--slots", "2", "--tasks", "200"),
        *("--storm-tasks", "12", "--storm-duration", "2", "--idle-seconds", "2"),
        *("--probes", "5", "--submits", "3"),
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "connected: 12 workers" in out
    assert "coordinator idle with the fleet connected" in out
    assert "heartbeat lag (socket read -> loop turn)" in out
    assert "/api/v1/health: p50" in out
    assert "dispatch: 200 zero-work tasks" in out
    assert "reconnect storm: coordinator SIGKILLed with 12 tasks running" in out
    assert "all 12 workers were back" in out
    # 3 single submits + 200 + 12 storm tasks, each completed exactly once.
    assert "check: 215 tasks submitted, 215 completed with exactly one outcome" in out
    assert "LOST OR DOUBLED" not in out
    # Held results went again after the restart (a worker whose first session
    # after it was cut short sends them once more).
    counts = json.loads(out.split("worker processes: ", 1)[1].splitlines()[0])
    assert counts["resent_after_reconnect"] >= 12
    assert counts["results_acked"] >= 215


def test_a_storm_larger_than_the_fleet_is_refused_naming_the_option(tmp_path: Path) -> None:
    done = run(tmp_path, "--workers", "2", "--slots", "1", "--storm-tasks", "5", timeout=60)
    assert done.returncode == 2
    assert "--storm-tasks must fit the fleet at once" in done.stderr
    done = run(tmp_path, "--workers", "0", timeout=60)
    assert done.returncode == 2
    assert "--workers must be at least 1" in done.stderr
