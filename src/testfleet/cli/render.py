"""Tables for people: tasks, attempts, workers, stats (Rich).

Callers: the CLI commands and ``testfleet demo``; ``--json`` bypasses these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "assigned": "cyan",
    "queued": "white",
    "unschedulable": "magenta",
}


def shown_status(task: dict[str, Any]) -> str:
    """'unschedulable' for a queued task that no connected worker can run."""
    if task["status"] == "queued" and task.get("unschedulable_reason"):
        return "unschedulable"
    return str(task["status"])


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "white")
    return f"[{style}]{status}[/{style}]"


def _duration(task: dict[str, Any]) -> str:
    value = task.get("duration_seconds")
    return "" if value is None else f"{value:.2f}s"


def _time(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%H:%M:%S.%f")[:-3]


def tasks_table(tasks: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title, header_style="bold")
    for column in ("task", "type", "prio", "status", "worker", "attempts", "duration", "note"):
        table.add_column(
            column, justify="right" if column in ("prio", "attempts", "duration") else "left"
        )
    for task in tasks:
        status = shown_status(task)
        note = task.get("unschedulable_reason") or ""
        error = task.get("error")
        if not note and error and status != "completed":
            note = f"{error['error_class']}: {error['message']}"
        table.add_row(
            task["task_id"],
            task["type"],
            str(task["priority"]),
            _styled(status),
            task.get("worker_id") or "",
            str(task["attempts"]),
            _duration(task),
            escape(note[:160]),
        )
    return table


def attempts_table(attempts: list[dict[str, Any]]) -> Table:
    table = Table(title="attempts", header_style="bold")
    for column in ("#", "attempt id", "worker", "status", "assigned", "ended", "seconds", "error"):
        table.add_column(column)
    for attempt in attempts:
        seconds = attempt.get("execution_time_seconds")
        error = attempt.get("error_message") or ""
        table.add_row(
            str(attempt["attempt"]),
            str(attempt["attempt_id"]),
            attempt["worker_id"],
            _styled(attempt["status"]),
            _time(attempt.get("start_time")),
            _time(attempt.get("end_time")),
            "" if seconds is None else f"{seconds:.3f}",
            escape(error[:160]),
        )
    return table


def workers_table(workers: list[dict[str, Any]]) -> Table:
    table = Table(title="workers", header_style="bold")
    for column in (
        "worker",
        "host",
        "status",
        "slots",
        "running",
        "hardware",
        "cpu",
        "mem GB",
        "gpus",
        "tags",
        "load",
    ):
        table.add_column(column)
    for worker in workers:
        caps = worker["capabilities"]
        gpus = ", ".join(g["name"] for g in caps.get("gpus", [])) or "-"
        load = worker.get("load") or {}
        cpu_load = load.get("cpu_percent")
        table.add_row(
            worker["worker_id"],
            worker["hostname"],
            _styled(worker["status"])
            if worker["status"] != "connected"
            else "[green]connected[/green]",
            str(worker["slots"]),
            str(worker["running"]),
            ",".join(worker["hardware"]),
            f"{caps['cpu']['model'][:28]} x{caps['cpu']['logical_cores']}",
            f"{caps['memory_gb']:.1f}",
            gpus,
            ",".join(f"{k}={v}" for k, v in sorted(worker["tags"].items())),
            "" if cpu_load is None else f"{cpu_load:.0f}% cpu",
        )
    return table


def stats_table(stats: dict[str, Any]) -> Table:
    table = Table(title="fleet", header_style="bold", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for status, count in stats["tasks"].items():
        table.add_row(f"tasks {status}", str(count))
    table.add_row("queue pending", str(stats["queue"]["pending"]))
    table.add_row("queue delayed (retry)", str(stats["queue"]["delayed"]))
    for status, count in stats["workers"].items():
        if count:
            table.add_row(f"workers {status}", str(count))
    table.add_row("slots busy / total", f"{stats['slots']['busy']} / {stats['slots']['total']}")
    for item in stats["unschedulable"]:
        table.add_row(f"unschedulable: {escape(item['reason'])}", str(item["tasks"]))
    return table


def print_task_detail(console: Console, detail: dict[str, Any]) -> None:
    task = detail["task"]
    console.print(tasks_table([task], title=f"task {task['task_id']}"))
    if task.get("unschedulable_reason"):
        console.print(f"[magenta]unschedulable:[/magenta] {escape(task['unschedulable_reason'])}")
    console.print(attempts_table(detail["attempts"]))
    result = detail.get("result")
    if result is not None:
        simulated = result["simulation_status"]["is_simulated"]
        console.print(
            f"result: [bold]{result['status']}[/bold] on {result['worker_id']} in "
            f"{result['execution_time_seconds']:.3f}s"
            + (" [yellow](simulated)[/yellow]" if simulated else " (real run)")
        )
        if result.get("results"):
            console.print_json(data=result["results"])
