"""Tables for people: a task without attempts, and stats with a long unschedulable reason."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from testfleet.cli.tables import STATS_LABEL_WIDTH, print_task_detail, stats_table

CUDA = "hardware: needs one of [cuda]; connected workers offer [cpu]"


def rendered(width: int, draw: Any) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    draw(console)
    return out.getvalue()


def task(**fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "task_id": "bench",
        "type": "benchmark",
        "priority": 1,
        "status": "queued",
        "unschedulable_reason": None,
        "worker_id": None,
        "attempts": 0,
        "duration_seconds": None,
        "error": None,
    }
    document.update(fields)
    return document


def test_a_task_without_attempts_says_so_instead_of_an_empty_table() -> None:
    detail: dict[str, Any] = {
        "task": task(unschedulable_reason=CUDA),
        "attempts": [],
        "result": None,
    }
    out = rendered(160, lambda console: print_task_detail(console, detail))
    assert "attempt id" not in out
    assert "no attempts yet: it is unschedulable" in out
    assert f"unschedulable: {CUDA}" in out  # the reason, brackets and all


def test_a_task_cancelled_before_it_ran_says_so() -> None:
    detail: dict[str, Any] = {"task": task(status="cancelled"), "attempts": [], "result": None}
    out = rendered(160, lambda console: print_task_detail(console, detail))
    assert "no attempts: it was cancelled before any worker ran it" in out
    assert "attempt id" not in out


def test_a_task_with_attempts_still_shows_them() -> None:
    attempt = {
        "attempt": 1,
        "attempt_id": 7,
        "worker_id": "w1",
        "status": "running",
        "start_time": "2026-01-01T00:00:00Z",
        "end_time": None,
        "execution_time_seconds": None,
        "error_message": None,
    }
    detail = {"task": task(status="running", attempts=1), "attempts": [attempt], "result": None}
    out = rendered(160, lambda console: print_task_detail(console, detail))
    assert "attempt id" in out
    assert "no attempts" not in out


def test_a_tasks_slice_and_a_speculative_copy_are_shown() -> None:
    attempt = {
        "attempt": 2,
        "attempt_id": 9,
        "worker_id": "w2",
        "status": "running",
        "start_time": "2026-01-01T00:00:00Z",
        "end_time": None,
        "execution_time_seconds": None,
        "error_message": None,
        "slice_index": 1,
        "speculative": True,
    }
    fallbacks = [{"after_seconds": 600, "requirements": {"hardware": ["cuda"]}}]
    queued: dict[str, Any] = {
        "task": task(fallbacks=fallbacks, slice_index=1),
        "attempts": [],
        "result": None,
    }
    out = rendered(160, lambda console: print_task_detail(console, queued))
    assert "requirement slice: 1 of 2 (waiting for it)" in out
    running = {
        "task": task(status="running", attempts=2, fallbacks=fallbacks, slice_index=1),
        "attempts": [attempt],
        "result": None,
    }
    out = rendered(160, lambda console: print_task_detail(console, running))
    assert "requirement slice: 1 of 2" in out
    assert "waiting" not in out
    assert "2 copy slice 1" in out


def stats(reason: str) -> dict[str, Any]:
    return {
        "tasks": {"queued": 3, "completed": 10},
        "queue": {"pending": 3, "delayed": 0},
        "workers": {"connected": 2, "lost": 0},
        "slots": {"busy": 1, "total": 4},
        "unschedulable": [{"reason": reason, "tasks": 3}],
    }


def test_a_long_unschedulable_reason_wraps_instead_of_stretching_the_table() -> None:
    reason = "; also ".join(
        [CUDA, "min_memory_gb: needs 512; connected workers offer at most 15.6"] * 4
    )
    assert len(reason) > 300
    out = rendered(400, lambda console: console.print(stats_table(stats(reason))))
    widest = max(len(line) for line in out.splitlines())
    assert widest <= STATS_LABEL_WIDTH + 20, out
    # Every word of the reason is still there, brackets included.
    flat = " ".join(out.split())
    for word in ("[cuda];", "[cpu];", "512;", "15.6"):
        assert word in flat
