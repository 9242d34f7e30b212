"""Read-only SQL from users against the live database, and tables exported as Parquet.

Callers: :meth:`testfleet.store.Store.query` and :meth:`Store.export_parquet`,
for ``POST /api/v1/sql`` (``testfleet sql``) and ``GET /api/v1/export/{table}``
(``testfleet export``). While a coordinator runs, DuckDB lets no other process
open its file, so this is how people query it.

What keeps a user's query from doing harm:

* Exactly one statement, and it must be a ``SELECT`` as DuckDB's own parser
  classifies it (``WITH``, ``FROM t``, ``SHOW``, ``DESCRIBE``, ``SUMMARIZE``
  and ``PRAGMA`` reads are ``SELECT``s to it). ``INSERT``, ``COPY``,
  ``ATTACH``, ``SET``, ``EXPLAIN ANALYZE`` (which runs its statement) and
  everything else are refused before anything runs.
* The store opens the database with ``enable_external_access = false``
  (see :mod:`testfleet.store.store`): a ``SELECT`` cannot read or list files
  of the coordinator's machine (``read_csv('/etc/...')``, ``glob``), and the
  setting cannot be switched back on while the database is open.
* A time limit: a watchdog interrupts the query's own cursor when it passes.
  The query runs on a fresh cursor (its own connection to the same database),
  so it reads the last committed state and never blocks the writer.
* A row limit: at most ``max_rows`` rows come back, and the answer says
  whether there were more.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, BinaryIO

import duckdb
import pyarrow.parquet as pq

from testfleet.domain.json_values import INT64_MAX, INT64_MIN

# The limits and table names live in the domain (no DuckDB there: the CLI
# declares its options from them); re-exported for the store and the API.
from testfleet.domain.live_query_limits import (
    DEFAULT_MAX_ROWS as DEFAULT_MAX_ROWS,
)
from testfleet.domain.live_query_limits import (
    DEFAULT_TIMEOUT_SECONDS as DEFAULT_TIMEOUT_SECONDS,
)
from testfleet.domain.live_query_limits import (
    MAX_ROWS_LIMIT as MAX_ROWS_LIMIT,
)
from testfleet.domain.live_query_limits import (
    MAX_TIMEOUT_SECONDS as MAX_TIMEOUT_SECONDS,
)
from testfleet.domain.live_query_limits import ExportTable as ExportTable

#: Rows per Arrow batch while a table is exported (bounds the memory it takes).
EXPORT_BATCH_ROWS = 64 * 1024


class QueryProblem(StrEnum):
    """Why a query gave no rows."""

    #: Not one read-only statement, or DuckDB refused it (syntax, unknown
    #: table, a file it may not read, out of memory...).
    INVALID = "invalid_query"
    #: It ran past its time limit and was stopped.
    TIMEOUT = "query_timeout"


class QueryError(Exception):
    """A user's query that was refused or stopped; ``message`` says why, for a person."""

    def __init__(self, problem: QueryProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message


@dataclass(frozen=True, slots=True)
class QueryColumn:
    name: str
    #: DuckDB's type name, e.g. ``VARCHAR``, ``TIMESTAMP``, ``DOUBLE``.
    type: str


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: list[QueryColumn]
    #: Each row as JSON values (see :func:`json_cell`).
    rows: list[list[Any]]
    #: True when the query had more rows than ``max_rows``.
    truncated: bool
    elapsed_seconds: float


def check_read_only(sql: str) -> None:
    """Raise :class:`QueryError` unless ``sql`` is exactly one ``SELECT`` statement."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryError(QueryProblem.INVALID, _message(error)) from None
    if len(statements) != 1:
        raise QueryError(
            QueryProblem.INVALID,
            f"give exactly one statement; this has {len(statements)}",
        )
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:  # pybind enums: compare, not identity
        raise QueryError(
            QueryProblem.INVALID,
            f"only reading queries may run here (SELECT, WITH, FROM, SHOW, DESCRIBE, "
            f"SUMMARIZE); this is {kind.name}",
        )


def run_query(
    open_cursor: Callable[[], duckdb.DuckDBPyConnection],
    sql: str,
    *,
    max_rows: int,
    timeout_seconds: float,
) -> QueryResult:
    """Run a user's read-only ``sql`` on a fresh cursor (``open_cursor()``), within limits.

    Blocks until the rows are in (the API runs it in a thread). Raises
    :class:`QueryError` for a query refused, failed or stopped.
    """
    check_read_only(sql)
    started = time.perf_counter()
    with open_cursor() as cursor:
        # The watchdog interrupts only this cursor (a connection of its own):
        # the writer and other readers carry on.
        watchdog = _Watchdog(cursor, timeout_seconds)
        try:
            cursor.execute(sql)
            description = cursor.description or []
            fetched = cursor.fetchmany(max_rows + 1)
        except duckdb.InterruptException:
            raise QueryError(
                QueryProblem.TIMEOUT,
                f"the query ran longer than {timeout_seconds:g} s and was stopped; narrow it "
                f"(a WHERE clause, a LIMIT) or allow more time (up to {MAX_TIMEOUT_SECONDS:g} s)",
            ) from None
        except duckdb.Error as error:
            raise QueryError(QueryProblem.INVALID, _message(error)) from None
        finally:
            watchdog.stop()
    return QueryResult(
        columns=[QueryColumn(str(column[0]), str(column[1])) for column in description],
        rows=[[json_cell(value) for value in row] for row in fetched[:max_rows]],
        truncated=len(fetched) > max_rows,
        elapsed_seconds=time.perf_counter() - started,
    )


class _Watchdog:
    """Interrupts a cursor once ``seconds`` have passed, and again every
    :data:`REPEAT_SECONDS` until stopped: an interrupt that lands before DuckDB
    has started the statement is lost, and one alone could let it run on."""

    REPEAT_SECONDS = 0.05

    def __init__(self, cursor: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self._cursor = cursor
        self._seconds = seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="query-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        if self._stopped.wait(self._seconds):
            return
        while not self._stopped.is_set():
            self._cursor.interrupt()
            self._stopped.wait(self.REPEAT_SECONDS)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def export_parquet(
    open_cursor: Callable[[], duckdb.DuckDBPyConnection], table: ExportTable, sink: BinaryIO
) -> int:
    """Write every row of ``table`` to ``sink`` as a Parquet file; returns the row count.

    Streams Arrow batches, so a large table costs one batch of memory. The
    rows are those committed when the export starts (one read transaction).
    """
    rows = 0
    with open_cursor() as cursor:
        # The table name is one of the enum's values, never text from a request.
        cursor.execute(f"SELECT * FROM {table.value}")
        reader = cursor.to_arrow_reader(EXPORT_BATCH_ROWS)
        with pq.ParquetWriter(sink, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
    return rows


def json_cell(value: object) -> Any:
    """A value DuckDB returned, as JSON can carry it.

    Times are ISO 8601 text, decimals and integers past 64 bits are text (a
    float would round them), bytes are base64, intervals are seconds, and
    non-finite floats are ``null`` (JSON has no infinity); lists, structs and
    maps are converted item by item.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(key): json_cell(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_cell(item) for item in value]
    return str(value)


def _message(error: duckdb.Error) -> str:
    """DuckDB's message and its hint ("Did you mean ..."), without the copy of the
    query and the caret it draws under it (``LINE 1: ...``)."""
    kept: list[str] = []
    for line in str(error).splitlines():
        if line.startswith("LINE "):
            break
        if line.strip():
            kept.append(line.strip())
    return " ".join(kept) or type(error).__name__
