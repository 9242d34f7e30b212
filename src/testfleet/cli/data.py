"""``testfleet sql`` and ``testfleet export``: the live database, while the coordinator runs.

Callers: registered on the main app (``cli/app.py``). A running coordinator is
the only process DuckDB lets open its file, so both go through its API: ``sql``
runs one read-only query there (``POST /api/v1/sql``, within a row and time
limit) and prints a table, JSON or CSV; ``export`` downloads whole tables as
Parquet files (``GET /api/v1/export/{table}``) for pandas, DuckDB or anything
else to read offline.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from testfleet.cli.app import (
    CoordinatorOption,
    JsonOption,
    console,
    errors,
    fail,
    fleet_client,
    print_json,
)
from testfleet.domain.live_query_limits import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT_SECONDS,
    MAX_ROWS_LIMIT,
    MAX_TIMEOUT_SECONDS,
    ExportTable,
)


def sql(
    query: Annotated[
        str,
        typer.Argument(
            help='One read-only statement, e.g. "SELECT status, count(*) FROM '
            "distributed_tasks GROUP BY status\"; '-' reads it from stdin.",
            show_default=False,
        ),
    ],
    max_rows: Annotated[
        int, typer.Option(min=1, max=MAX_ROWS_LIMIT, help="Print at most this many rows.")
    ] = DEFAULT_MAX_ROWS,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.001, max=MAX_TIMEOUT_SECONDS, help="Stop the query after this many seconds."
        ),
    ] = DEFAULT_TIMEOUT_SECONDS,
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Write CSV (with a header) to stdout.")] = (
        False
    ),
) -> None:
    """Query the coordinator's live database with read-only SQL (SELECT, SHOW, DESCRIBE...).

    The tables are the README's (worker_nodes, distributed_tasks,
    task_execution_history, task_results, benchmark_results, test_results).
    Statements that change anything, and reading files, are refused.
    """
    if as_json and as_csv:
        fail("give --json or --csv, not both")
    text = sys.stdin.read() if query == "-" else query
    with fleet_client(coordinator) as client:
        answer = client.sql(text, max_rows=max_rows, timeout=timeout)
    if as_json:
        print_json(answer)
        return
    names = [column["name"] for column in answer["columns"]]
    if as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows(answer["rows"])
    else:
        console.print(_sql_table(names, answer["rows"]))
    if answer["truncated"]:
        errors.print(
            f"[yellow]only the first {answer['row_count']} rows; --max-rows shows more "
            f"(up to {MAX_ROWS_LIMIT})[/yellow]"
        )


def _sql_table(names: list[str], rows: list[list[Any]]) -> Table:
    table = Table(header_style="bold", caption=f"{len(rows)} row(s)")
    for name in names:
        table.add_column(escape(name))
    for row in rows:
        table.add_row(*("" if value is None else escape(str(value)) for value in row))
    return table


def export(
    tables: Annotated[
        list[ExportTable] | None,
        typer.Argument(help="Tables to export (default: all of them).", show_default=False),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for the TABLE.parquet files.")
    ] = Path("testfleet-export"),
    coordinator: CoordinatorOption = None,
) -> None:
    """Download tables of the coordinator's database as Parquet files, one per table."""
    chosen = list(dict.fromkeys(tables or list(ExportTable)))
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: it exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    with fleet_client(coordinator) as client:
        for table in chosen:
            destination = out / f"{table.value}.parquet"
            rows = client.export(table.value, destination)
            console.print(f"{destination}: {rows} row(s), {destination.stat().st_size:,} bytes")
