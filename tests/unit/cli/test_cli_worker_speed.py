"""`testfleet workers` shows each worker's measured speed: "-" until measured (or
from a coordinator too old to say), the factor, and a slowed worker flagged."""

from __future__ import annotations

import io
from typing import Any

from testfleet.cli.tables import workers_table
from testfleet.cli.terminal_text import SafeConsole


def worker(worker_id: str, **speed: Any) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "hostname": "host",
        "status": "connected",
        "slots": 1,
        "running": 0,
        "hardware": ["cpu"],
        "tags": {},
        "load": {},
        "capabilities": {"cpu": {"model": "cpu", "logical_cores": 4}, "memory_gb": 8.0},
        **speed,
    }


def rows() -> dict[str, str]:
    out = io.StringIO()
    table = workers_table(
        [
            worker("old"),  # an older coordinator: no speed fields at all
            worker("new", speed_factor=1.0, speed_samples=0, slowed=False),
            worker("fast", speed_factor=2.04, speed_samples=12, slowed=False),
            worker("hot", speed_factor=0.41, speed_samples=32, slowed=True),
        ]
    )
    SafeConsole(file=out, width=300, color_system=None).print(table)
    lines = out.getvalue().splitlines()
    # The header row is drawn with ┃, the body rows with │.
    return {
        line.split(bar)[1].strip(): line for line in lines for bar in "│┃" if line.count(bar) > 2
    }


def test_the_speed_column_shows_measured_factors_and_flags_a_slowed_worker() -> None:
    shown = rows()
    assert "speed" in shown["worker"]
    assert [cell.strip() for cell in shown["old"].split("│")][6] == "-"
    assert [cell.strip() for cell in shown["new"].split("│")][6] == "-"
    assert "2.04x" in shown["fast"]
    assert "slowed" not in shown["fast"]
    assert "0.41x slowed" in shown["hot"]
