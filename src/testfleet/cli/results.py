"""``testfleet results``: benchmark results compared across hardware and over time,
and the regressions found in them (and in test durations).

Callers: registered on the main app as the ``results`` sub-command (``cli/app.py``).
Every command asks the coordinator's API (``/api/v1/results/...``), where the
analysis runs inside DuckDB; nothing here opens a database. Output is a table
for people, ``--json`` (the API's document as it came) or ``--csv`` (one row
per API row, with a header, for spreadsheets and pandas).
"""

from __future__ import annotations

import csv
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from testfleet.analysis.regressions import SeriesKind
from testfleet.cli.app import (
    CoordinatorOption,
    JsonOption,
    console,
    errors,
    fail,
    fleet_client,
    print_json,
)
from testfleet.cli.client_options import takes_credentials
from testfleet.cli.help_format import FleetCommand, FleetGroup
from testfleet.cli.tables import (
    bench_device,
    busy_notes,
    compare_errors,
    compare_table,
    history_table,
    models_table,
)
from testfleet.cli.terminal_text import printable, shown
from testfleet.client import FleetClient, FleetError
from testfleet.domain.benchmark import Precision
from testfleet.domain.enums import HardwareKind

results_app = typer.Typer(
    name="results",
    help="Benchmark results: compare hardware side by side, follow trends over time.",
    no_args_is_help=True,
    cls=FleetGroup,
)

ModelOption = Annotated[
    str,
    typer.Option("--model", "-m", help="The model, e.g. bert-base-uncased.", show_default=False),
]
CsvOption = Annotated[bool, typer.Option("--csv", help="Write CSV (with a header row) to stdout.")]
PrecisionOption = Annotated[
    Precision | None, typer.Option(help="Only this precision.", show_default=False)
]
HardwareOption = Annotated[
    HardwareKind | None, typer.Option(help="Only this kind of hardware.", show_default=False)
]

#: The CSV columns of ``compare``, in order (the API's row fields).
COMPARE_COLUMNS = (
    "batch_size",
    "variant",
    "hardware",
    "device_name",
    "precision",
    "is_simulated",
    "runs",
    "failed_runs",
    "recorded_time",
    "throughput_items_per_second",
    "latency_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "memory_mb",
    "error_class",
    "error_message",
    "task_id",
    "worker_id",
    "attempt_id",
    "torch_version",
    "transformers_version",
    "load_note",
    "backend",
    "output_check",
    "output_max_abs_diff",
)
#: The CSV columns of ``history``, in order.
HISTORY_COLUMNS = (
    "recorded_time",
    "task_id",
    "worker_id",
    "attempt_id",
    "variant",
    "hardware",
    "device_name",
    "precision",
    "batch_size",
    "is_simulated",
    "throughput_items_per_second",
    "throughput_change_percent",
    "latency_ms",
    "latency_change_percent",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "memory_mb",
    "error_class",
    "error_message",
    "torch_version",
    "transformers_version",
    "load_note",
    "backend",
    "output_check",
    "output_max_abs_diff",
)

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str, now: float | None = None) -> str:
    """``--since``: an ISO 8601 date or time (UTC if it has no zone), or an age such
    as ``90m``, ``12h``, ``7d``, ``2w``; returned as ISO 8601 UTC for the API."""
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = float(relative[1]), relative[2]
        moment = datetime.fromtimestamp(
            (time.time() if now is None else now) - amount * _UNIT_SECONDS[unit], tz=UTC
        )
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            fail(
                f"--since {value!r}: give an ISO 8601 date or time (2024-05-01, "
                "2024-05-01T12:00:00Z) or an age (90m, 12h, 7d, 2w)"
            )
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _check_formats(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        fail("--json and --csv cannot be used together: choose one output format")


def _csv_value(value: Any, *, terminal: bool) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if terminal and isinstance(value, str):
        return printable(value)
    return value


def write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """``rows`` as CSV on stdout: a header row, then one line per row (``""`` for null).

    Written to a terminal, text has its control characters made visible (an
    error message is a task's words); piped to a program, it is kept exact."""
    terminal = sys.stdout.isatty()
    writer = csv.writer(sys.stdout)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(column), terminal=terminal) for column in columns])
    sys.stdout.flush()


def _fetch_rows(
    coordinator: str | None,
    model: str,
    fetch: Callable[[FleetClient], dict[str, Any]],
    *,
    filtered: bool,
    quiet: bool,
) -> dict[str, Any]:
    """The API's document for ``compare`` or ``history``; an empty one is explained
    (on stderr when ``quiet``: the output is JSON or CSV for a program)."""
    with fleet_client(coordinator) as client:
        document = fetch(client)
        if not document["rows"]:
            _say_nothing_found(client, model, filtered, to_stderr=quiet)
    return document


def _printed_for_programs(
    document: dict[str, Any], columns: Sequence[str], *, as_json: bool, as_csv: bool
) -> bool:
    """Print ``document`` as JSON or its rows as CSV when asked; False: print the table."""
    if as_json:
        print_json(document)
    elif as_csv:
        write_csv(document["rows"], columns)
    return as_json or as_csv


def _say_nothing_found(client: FleetClient, model: str, filtered: bool, *, to_stderr: bool) -> None:
    """Explain an empty answer: a model with no results at all, or filters that match none."""
    try:
        known = client.benchmark_models()
    except FleetError:
        known = []
    if filtered and model in known:
        message = f"no benchmark results for model {model!r} match these filters"
    else:
        message = f"no benchmark results for model {model!r}"
        if known:
            message += f"; models with results: {', '.join(known[:20])}"
            message += " ..." if len(known) > 20 else ""
        else:
            message += "; no model has benchmark results yet"
    (errors if to_stderr else console).print(shown(message))


@results_app.command(cls=FleetCommand)
@takes_credentials
def compare(
    model: ModelOption,
    precision: PrecisionOption = None,
    hardware: HardwareOption = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only runs since this ISO 8601 date/time (UTC) or age (12h, 7d).",
            show_default=False,
        ),
    ] = None,
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
    as_csv: CsvOption = False,
) -> None:
    """A model's latest throughput and latency per batch size, hardware side by side."""
    _check_formats(as_json, as_csv)
    since_iso = None if since is None else parse_since(since)
    document = _fetch_rows(
        coordinator,
        model,
        lambda client: client.benchmark_compare(
            model,
            precision=None if precision is None else precision.value,
            hardware=None if hardware is None else hardware.value,
            since=since_iso,
        ),
        filtered=precision is not None or hardware is not None or since is not None,
        quiet=as_json or as_csv,
    )
    if _printed_for_programs(document, COMPARE_COLUMNS, as_json=as_json, as_csv=as_csv):
        return
    if not document["rows"]:
        return
    if has_backends(document):
        console.print(backends_table(document))
        console.print(
            "[dim]the latest run of each backend and device (n=N: N runs recorded); output "
            "check: the backend's outputs against torch's on the same weights and inputs[/dim]"
        )
    else:
        console.print(compare_table(document))
        console.print(
            "[dim]figures of the latest run per cell (n=N: N runs recorded; "
            "see `testfleet results history`)[/dim]"
        )
    for line in compare_errors(document) + busy_notes(document):
        console.print(line)


def has_backends(document: dict[str, Any]) -> bool:
    """Whether any row was run by a backend other than torch (issue 15)."""
    return any((row.get("backend") or "torch") != "torch" for row in document["rows"])


def _check_cell(row: dict[str, Any]) -> str:
    """A row's output check: passed or FAILED with the largest difference; torch is the
    reference ("reference"); a row of a run that compared nothing: "-"."""
    check = row.get("output_check")
    diff = row.get("output_max_abs_diff")
    if (row.get("backend") or "torch") == "torch":
        return "[dim]reference[/dim]"
    if check is None:
        return "-"
    figure = f" {diff:.2g}" if isinstance(diff, int | float) and diff < 1e300 else ""
    if check == "passed":
        return f"[green]passed[/green]{figure}"
    return f"[red]FAILED[/red]{shown(figure)}"


def backends_table(document: dict[str, Any]) -> Table:
    """``compare`` with backends (issue 15): one line per backend, device and batch size,
    the latest run's median latency and throughput, and its output check."""
    table = Table(title=f"{shown(document['model'])}: backends side by side", header_style="bold")
    for column, justify in (
        ("backend", "left"),
        ("device", "left"),
        ("batch", "right"),
        ("p50 ms", "right"),
        ("items/s", "right"),
        ("output check", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        return (
            row.get("variant") or "",
            row["precision"],
            row["batch_size"],
            (row.get("backend") or "torch") != "torch",
            row.get("backend") or "torch",
            row["hardware"],
            row["device_name"],
        )

    for row in sorted(document["rows"], key=order):
        failed = row.get("error_class") and row.get("throughput_items_per_second") is None
        throughput = "" if failed else f"{row.get('throughput_items_per_second') or 0:,.1f}"
        runs = row.get("runs", 1)
        if runs > 1 and not failed:
            throughput += f" [dim]n={runs}[/dim]"
        p50 = row.get("latency_p50_ms")
        table.add_row(
            shown(row.get("backend") or "torch"),
            # The backend has its own column: the device label without it.
            shown(bench_device({**row, "backend": "torch"}) + f" · {row['precision']}"),
            str(row["batch_size"]),
            shown((row.get("error_class") or "error").replace("_", " "))
            if failed
            else ("" if p50 is None else f"{p50:,.3f}"),
            throughput,
            _check_cell(row),
        )
    return table


@results_app.command(cls=FleetCommand)
@takes_credentials
def history(
    model: ModelOption,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, max=65536, help="Only this batch size.", show_default=False),
    ] = None,
    precision: PrecisionOption = None,
    hardware: HardwareOption = None,
    limit: Annotated[
        int, typer.Option(min=1, max=100_000, help="Show at most this many recent rows.")
    ] = 1000,
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
    as_csv: CsvOption = False,
) -> None:
    """Every run of a model over time, with the change from the previous run (Δ %)."""
    _check_formats(as_json, as_csv)
    document = _fetch_rows(
        coordinator,
        model,
        lambda client: client.benchmark_history(
            model,
            batch_size=batch_size,
            precision=None if precision is None else precision.value,
            hardware=None if hardware is None else hardware.value,
            limit=limit,
        ),
        filtered=batch_size is not None or precision is not None or hardware is not None,
        quiet=as_json or as_csv,
    )
    if _printed_for_programs(document, HISTORY_COLUMNS, as_json=as_json, as_csv=as_csv):
        return
    if document["rows"]:
        console.print(history_table(document))
        for line in busy_notes(document):
            console.print(line)
        if len(document["rows"]) >= limit:
            console.print(f"[dim]the {limit} most recent rows; --limit shows more[/dim]")


@results_app.command(cls=FleetCommand)
@takes_credentials
def models(coordinator: CoordinatorOption = None, as_json: JsonOption = False) -> None:
    """Models that have benchmark results."""
    with fleet_client(coordinator) as client:
        names = client.benchmark_models()
    if as_json:
        print_json({"models": names})
    elif names:
        console.print(models_table(names))
    else:
        console.print("no benchmark results yet: submit a task of type benchmark")


def regressions_table(document: dict[str, Any]) -> Table:
    """One row per regression: the series, its baseline and noise, the latest worse figure."""
    table = Table(title="regressions", header_style="bold")
    for column, justify in (
        ("status", "left"),
        ("kind", "left"),
        ("series", "left"),
        ("figure", "left"),
        ("baseline", "right"),
        ("noise", "right"),
        ("latest", "right"),
        ("change", "right"),
        ("worse runs", "right"),
        ("since (UTC)", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in document["regressions"]:
        labels = ", ".join(f"{k}={v}" for k, v in row["labels"].items())
        change = row.get("change_percent")
        table.add_row(
            row["status"],
            row["kind"],
            shown(f"{row['name']} ({labels})" if labels else row["name"]),
            row["figure"],
            f"{row['baseline']:.4g}",
            f"{row['noise']:.3g}",
            f"{row['latest_value']:.4g}",
            "" if change is None else f"{change:+.1f} %",
            str(row["worse_runs"]),
            shown((row.get("started") or "").replace("T", " ")[:19]),
        )
    return table


@results_app.command(cls=FleetCommand)
@takes_credentials
def regressions(
    include_resolved: Annotated[
        bool, typer.Option("--all", help="Also list regressions that have recovered.")
    ] = False,
    kind: Annotated[
        SeriesKind | None,
        typer.Option(help="Only benchmark figures, or only test durations.", show_default=False),
    ] = None,
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Benchmark figures and test durations that got worse beyond their noise.

    Per series, the baseline is the median of its recent runs and the noise their
    spread; two runs in a row worse by more than 10 % and 3x the noise open a
    regression (test durations: and by 0.1 s), two normal runs resolve it.
    """
    with fleet_client(coordinator) as client:
        document = client.regressions(
            include_resolved=include_resolved, kind=None if kind is None else kind.value
        )
    if as_json:
        print_json(document)
    elif document["regressions"]:
        console.print(regressions_table(document))
    else:
        console.print("no regressions" + ("" if include_resolved else " open"))
