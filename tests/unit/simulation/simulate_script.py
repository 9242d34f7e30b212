"""Runs ``benchmarks/simulate.py`` as a user does, for the tests of the script
(``test_simulate_benchmark.py``, ``test_simulate_compare.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "simulate.py"


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    """The script's exit code and output with ``args`` (this interpreter, 120 s at most)."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
