"""Tables for people: tasks, attempts, workers, stats (Rich).

Callers: the CLI commands and ``testfleet demo``; ``--json`` bypasses these.
Every string that came from the coordinator (so from a task or a worker) goes
into a table through :func:`~testfleet.cli.terminal_text.shown`: its control
characters made visible and its ``[`` never read as markup.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table

from testfleet.cli.terminal_text import shown
from testfleet.domain.enums import ShownStatus, TaskStatus

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


def shown_status(task: dict[str, Any]) -> ShownStatus:
    """``unschedulable`` for a queued task that no connected worker can run, else its
    status (what ``tasks --status`` filters by too)."""
    if task["status"] == TaskStatus.QUEUED.value and task.get("unschedulable_reason"):
        return ShownStatus.UNSCHEDULABLE
    return ShownStatus(task["status"])


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "white")
    return f"[{style}]{shown(status)}[/{style}]"


def _duration(task: dict[str, Any]) -> str:
    value = task.get("duration_seconds")
    return "" if value is None else f"{value:.2f}s"


def _time(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%H:%M:%S.%f")[:-3]


def tasks_table(tasks: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=None if title is None else shown(title), header_style="bold")
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
            shown(task["task_id"]),
            shown(task["type"]),
            str(task["priority"]),
            _styled(status),
            shown(task.get("worker_id") or ""),
            str(task["attempts"]),
            _duration(task),
            shown(note[:160]),
        )
    return table


def attempts_table(attempts: list[dict[str, Any]]) -> Table:
    table = Table(title="attempts", header_style="bold")
    for column in ("#", "attempt id", "worker", "status", "assigned", "ended", "seconds", "error"):
        table.add_column(column)
    for attempt in attempts:
        seconds = attempt.get("execution_time_seconds")
        error = attempt.get("error_message") or ""
        number = str(attempt["attempt"])
        # Issue 14: a speculative copy, and the requirement slice it was placed under.
        if attempt.get("speculative"):
            number += " copy"
        if attempt.get("slice_index"):
            number += f" slice {attempt['slice_index']}"
        table.add_row(
            number,
            str(attempt["attempt_id"]),
            shown(attempt["worker_id"]),
            _styled(attempt["status"]),
            _time(attempt.get("start_time")),
            _time(attempt.get("end_time")),
            "" if seconds is None else f"{seconds:.3f}",
            shown(error[:160]),
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
        "speed",
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
        gpus = ", ".join(str(g["name"]) for g in caps.get("gpus", [])) or "-"
        load = worker.get("load") or {}
        cpu_load = load.get("cpu_percent")
        table.add_row(
            shown(worker["worker_id"]),
            shown(worker["hostname"]),
            _styled(worker["status"])
            if worker["status"] != "connected"
            else "[green]connected[/green]",
            str(worker["slots"]),
            str(worker["running"]),
            _speed(worker),
            shown(",".join(worker["hardware"])),
            shown(f"{caps['cpu']['model'][:28]} x{caps['cpu']['logical_cores']}"),
            f"{caps['memory_gb']:.1f}",
            shown(gpus),
            shown(",".join(f"{k}={v}" for k, v in sorted(worker["tags"].items()))),
            "" if cpu_load is None else f"{cpu_load:.0f}% cpu",
        )
    return table


def _speed(worker: dict[str, Any]) -> str:
    """A worker's measured speed factor; "-" until measured (or from an older
    coordinator), flagged when it slowed against its own baseline."""
    if not worker.get("speed_samples"):
        return "-"
    text = f"{float(worker.get('speed_factor', 1.0)):.2f}x"
    return f"[red]{text} slowed[/red]" if worker.get("slowed") else text


#: Widest the stats table's label column gets: an unschedulable reason can run to
#: hundreds of characters, and the whole table would stretch to the terminal's width
#: for it; longer labels wrap instead.
STATS_LABEL_WIDTH = 60


def stats_table(stats: dict[str, Any]) -> Table:
    """``testfleet stats``: counts down one column, labels wrapped at STATS_LABEL_WIDTH."""
    table = Table(title="fleet", header_style="bold", show_header=False)
    table.add_column("what", max_width=STATS_LABEL_WIDTH, overflow="fold")
    table.add_column("count", justify="right")
    for status, count in stats["tasks"].items():
        table.add_row(f"tasks {shown(status)}", str(count))
    table.add_row("queue pending", str(stats["queue"]["pending"]))
    table.add_row("queue delayed (retry)", str(stats["queue"]["delayed"]))
    for status, count in stats["workers"].items():
        if count:
            table.add_row(f"workers {shown(status)}", str(count))
    table.add_row("slots busy / total", f"{stats['slots']['busy']} / {stats['slots']['total']}")
    for item in stats["unschedulable"]:
        table.add_row(f"unschedulable: {shown(item['reason'])}", str(item["tasks"]))
    return table


def print_task_detail(console: Console, detail: dict[str, Any]) -> None:
    task = detail["task"]
    console.print(tasks_table([task], title=f"task {task['task_id']}"))
    if task.get("unschedulable_reason"):
        console.print(f"[magenta]unschedulable:[/magenta] {shown(task['unschedulable_reason'])}")
    if task.get("fallbacks"):
        waiting = " (waiting for it)" if task["status"] == "queued" else ""
        console.print(
            f"requirement slice: {task.get('slice_index', 0)} of "
            f"{len(task['fallbacks']) + 1}{waiting}"
        )
    if detail["attempts"]:
        console.print(attempts_table(detail["attempts"]))
    elif TaskStatus(task["status"]).is_terminal:
        console.print(f"no attempts: it was {_styled(shown_status(task))} before any worker ran it")
    else:
        console.print(f"no attempts yet: it is {_styled(shown_status(task))}")
    result = detail.get("result")
    if result is not None:
        simulated = result["simulation_status"]["is_simulated"]
        console.print(
            f"result: [bold]{shown(result['status'])}[/bold] on {shown(result['worker_id'])} in "
            f"{result['execution_time_seconds']:.3f}s"
            + (" [yellow](simulated)[/yellow]" if simulated else " (real run)")
        )
        if result.get("results"):
            # ensure_ascii: JSON escapes C0 controls itself, but not DEL or C1.
            console.print_json(data=result["results"], ensure_ascii=True)


# ---------------------------------------------------------------- benchmark results


def _number(value: float | None) -> str:
    """A figure with as many decimals as its size deserves."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _utc(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")


def bench_device(row: dict[str, Any]) -> str:
    """``cuda · NVIDIA H200 · seq=128`` (plus ``(simulated)``: never shown as real hardware);
    a backend other than torch leads (``onnxruntime · cpu · AMD EPYC``, issue 15)."""
    label = f"{row['hardware']} · {row['device_name']}"
    if (row.get("backend") or "torch") != "torch":
        label = f"{row['backend']} · {label}"
    if row.get("variant"):
        label += f" · {row['variant']}"
    return label + " (simulated)" if row.get("is_simulated") else label


def _bench_error(row: dict[str, Any]) -> str:
    error_class = row.get("error_class") or "error"
    return f"[red]{shown(error_class.replace('_', ' '))}[/red]"


def _group_key(row: dict[str, Any]) -> tuple[str, str, str, str, bool]:
    return (
        row.get("variant") or "",
        row["hardware"],
        row["device_name"],
        row["precision"],
        bool(row.get("is_simulated")),
    )


def compare_table(document: dict[str, Any]) -> Table:
    """Batch sizes down, and per (hardware / device / precision) three columns across:
    throughput (items/s), mean and p99 latency (ms) of the latest run.

    A cell whose latest run failed (out of memory, say) shows the error; ``n=N``
    after a throughput says N runs were recorded for that cell (the figures are
    the latest one's); a blank cell was never measured.
    """
    rows: list[dict[str, Any]] = document["rows"]
    groups = sorted({_group_key(row) for row in rows})
    cells = {(row["batch_size"], _group_key(row)): row for row in rows}
    title = f"{shown(document['model'])}: latest run per batch size"
    table = Table(title=title, header_style="bold")
    table.add_column("batch", justify="right")
    for index, group in enumerate(groups):
        variant, hardware, device_name, precision, simulated = group
        style = "cyan" if index % 2 == 0 else "magenta"
        label = shown(f"{hardware} · {device_name} · {precision}")
        if variant:
            label += shown(f" · {variant}")
        if simulated:
            label += " [yellow](simulated)[/yellow]"
        table.add_column(f"[{style}]{label}[/{style}]\nitems/s", justify="right")
        table.add_column("\nmean ms", justify="right")
        table.add_column("\np99 ms", justify="right")
    for batch_size in sorted({row["batch_size"] for row in rows}):
        line = [str(batch_size)]
        for group in groups:
            row = cells.get((batch_size, group))
            if row is None:
                line += ["", "", ""]
            elif row.get("error_class") and row.get("throughput_items_per_second") is None:
                line += [_bench_error(row), "-", "-"]
            else:
                runs = row.get("runs", 1)
                throughput = _number(row.get("throughput_items_per_second"))
                if runs > 1:
                    throughput += f" [dim]n={runs}[/dim]"
                if row.get("load_note"):
                    throughput += BUSY_MARK
                line += [
                    throughput,
                    _number(row.get("latency_ms")),
                    _number(row.get("latency_p99_ms")),
                ]
        table.add_row(*line)
    return table


def compare_errors(document: dict[str, Any]) -> list[str]:
    """One line per cell whose latest run failed: where, and the error's message."""
    lines = []
    for row in document["rows"]:
        if not row.get("error_class"):
            continue
        message = (row.get("error_message") or "").splitlines()
        lines.append(
            f"batch {row['batch_size']} on {shown(bench_device(row))} · {shown(row['precision'])}: "
            f"{_bench_error(row)}" + (f": {shown(message[0][:200])}" if message else "")
        )
    return lines


#: After a figure measured while the machine was busy (see :func:`busy_notes`).
BUSY_MARK = " [yellow]busy[/yellow]"


def busy_notes(document: dict[str, Any]) -> list[str]:
    """One line per run marked busy in a compare or history document: which run,
    on what, and the load it started under (``load_note``)."""
    lines: dict[str, str] = {}
    for row in document["rows"]:
        note = row.get("load_note")
        if note and row["task_id"] not in lines:
            lines[row["task_id"]] = (
                f"[yellow]busy[/yellow] {shown(row['task_id'])} on "
                f"{shown(bench_device(row))}: {shown(note)}"
            )
    return list(lines.values())


def _change(percent: float | None, *, higher_is_better: bool) -> str:
    if percent is None:
        return ""
    text = f"{percent:+.1f}%"
    if percent == 0:
        return text
    better = (percent > 0) == higher_is_better
    style = "green" if better else "red"
    return f"[{style}]{text}[/{style}]"


def history_table(document: dict[str, Any]) -> Table:
    """One row per run and batch size, oldest first, with the change from the previous
    measured run of the same device, precision and batch size (Δ, in percent)."""
    table = Table(title=f"{shown(document['model'])}: runs over time", header_style="bold")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("recorded (UTC)", "left"),
        ("device", "left"),
        ("precision", "left"),
        ("batch", "right"),
        ("items/s", "right"),
        ("Δ", "right"),
        ("mean ms", "right"),
        ("Δ", "right"),
        ("p99 ms", "right"),
        ("memory MB", "right"),
        ("torch", "left"),
        ("worker", "left"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for row in document["rows"]:
        failed = row.get("error_class") and row.get("throughput_items_per_second") is None
        table.add_row(
            _utc(row.get("recorded_time")),
            shown(bench_device(row)),
            shown(row["precision"]),
            str(row["batch_size"]),
            _bench_error(row)
            if failed
            else _number(row.get("throughput_items_per_second"))
            + (BUSY_MARK if row.get("load_note") else ""),
            _change(row.get("throughput_change_percent"), higher_is_better=True),
            "" if failed else _number(row.get("latency_ms")),
            _change(row.get("latency_change_percent"), higher_is_better=False),
            "" if failed else _number(row.get("latency_p99_ms")),
            "" if failed else _number(row.get("memory_mb")),
            shown(row.get("torch_version") or ""),
            shown(row.get("worker_id") or ""),
        )
    return table


def models_table(models: list[str]) -> Table:
    table = Table(title="benchmarked models", header_style="bold")
    table.add_column("model")
    for model in models:
        table.add_row(shown(model))
    return table
