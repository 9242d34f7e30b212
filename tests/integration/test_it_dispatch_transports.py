"""``benchmarks/dispatch.py --compare-transports`` runs (issue 16's table): real fleets,
tiny sizes, the five variants in one session, every row of the table printed.

Nothing here measures speed: the figures are whatever this machine gives; the
test holds the benchmark to running and to saying what it compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

DISPATCH = Path(__file__).resolve().parents[2] / "benchmarks" / "dispatch.py"


@pytest.mark.timeout(600)
def test_compare_transports_prints_every_variant() -> None:
    done = subprocess.run(
        [
            *(sys.executable, str(DISPATCH), "--compare-transports", "--rounds", "1"),
            *("--workers", "2", "--slots", "2", "--tasks", "40", "--probe", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|")[1:3] for line in done.stdout.splitlines() if line.startswith("  | ")]
    variants = [(t.strip(), c.strip()) for t, c in rows if t.strip() != "transport"]
    assert variants == [
        ("websocket", "json"),
        ("grpc", "json"),
        ("websocket", "msgpack"),
        ("grpc", "msgpack"),
        ("grpc", "protobuf"),
    ]
    assert "gRPC, codec protobuf" in done.stdout
    assert "attempts recorded: 40;" in done.stdout


def test_protobuf_over_the_websocket_is_refused_naming_the_fix() -> None:
    done = subprocess.run(
        [sys.executable, str(DISPATCH), "--codec", "protobuf", "--workers", "1", "--tasks", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "add --transport grpc" in done.stderr
