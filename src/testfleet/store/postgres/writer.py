"""The PostgreSQL store's writes: the loop's batches, fencing, and the small writes.

Callers: :class:`~testfleet.store.postgres.PostgresStore` calls
:func:`write_tables` from its commit thread (under its write lock, on its one
writer connection) with the tables ``writer.encode_batch`` encoded on the
loop, and runs the token and alert writes through :class:`DuckStyleCursor`.

How a batch goes in, in one transaction:

1. The fencing check (the failover protocol): ``SELECT epoch FROM
   coordinator_lease WHERE id = 1 FOR SHARE``. A different epoch means another
   coordinator took over: roll back and raise :class:`StoreFenced`. The share
   lock also makes a takeover's ``UPDATE coordinator_lease`` wait for this
   commit, so writes and changes of leader are serialised; a takeover ends
   the transaction first if its leader lost the lease mid-commit (stopped,
   so the commit would never finish: ``PostgresLease.take_over``).
2. Per table, the Arrow table is written as CSV by pyarrow (C++, no Python
   per row) and ``COPY``-ed into a temporary staging table, then moved with
   the very statement DuckDB's writer runs (``writer.statement``: insert,
   update, or ``INSERT ... ON CONFLICT``), plus ``written_epoch``.

Staging tables are made once per connection, ``ON COMMIT DELETE ROWS``,
rather than per commit (``ON COMMIT DROP``): creating a table is a catalog
write, and at thousands of commits a second it cost a third of the throughput.
A rolled-back batch's staged rows go with the rollback.

``synchronous_commit`` is left as the server has it (on by default): the
coordinator acknowledges what a commit returned from, so it must be durable.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pyarrow.csv

from testfleet.store.errors import StoreFenced
from testfleet.store.rows import ATTEMPTS, BENCHMARKS, RESULTS, TASKS, TESTS, WORKERS
from testfleet.store.writer import EncodedTables, statement

#: The tables whose rows say which leader wrote them (the failover protocol).
_EPOCH_TABLES = frozenset({TASKS.table, ATTEMPTS.table, RESULTS.table})
#: Every table a batch writes.
MAPPINGS = (WORKERS, TASKS, ATTEMPTS, RESULTS, BENCHMARKS, TESTS)
_CSV = pyarrow.csv.WriteOptions(include_header=False)

Connection = psycopg.Connection[tuple[Any, ...]]


def check_fence(connection: Connection, epoch: int | None) -> None:
    """Inside an open transaction: raise :class:`StoreFenced` when the lease's epoch
    is no longer ``epoch`` (None: no fencing, a single coordinator)."""
    if epoch is None:
        return
    row = connection.execute(
        "SELECT epoch FROM coordinator_lease WHERE id = 1 FOR SHARE"
    ).fetchone()
    current = int(row[0]) if row else -1
    if current != epoch:
        raise StoreFenced(epoch, current)


class Staging:
    """The writer connection's staging tables, one per table and column set the
    batch encoder makes (all columns, or an update's), created when the
    connection opens, outside any transaction: a table made inside a batch
    that then failed would vanish with the rollback."""

    def __init__(self, connection: Connection) -> None:
        self._names: dict[tuple[str, tuple[str, ...]], str] = {}
        for mapping in MAPPINGS:
            for columns in (mapping.column_names, mapping.update_column_names):
                key = (mapping.table, tuple(columns))
                if key in self._names:
                    continue
                name = f"incoming_{mapping.table}_{len(self._names)}"
                connection.execute(
                    f"CREATE TEMP TABLE {name} ON COMMIT DELETE ROWS AS "
                    f"SELECT {', '.join(columns)} FROM {mapping.table} WITH NO DATA"
                )
                self._names[key] = name

    def table_for(self, table: str, columns: Sequence[str]) -> str:
        return self._names[(table, tuple(columns))]


class ConnectionLost(Exception):
    """The connection was found dead before anything of a transaction reached the
    server (at its BEGIN): the caller may reconnect and run it again, nothing of
    it can have been stored."""


@contextlib.contextmanager
def begin(connection: Connection) -> Iterator[None]:
    """A transaction on ``connection``; :class:`ConnectionLost` if its BEGIN finds
    the connection dead (a server restarted since the last write)."""
    try:
        transaction = connection.transaction()
        transaction.__enter__()
    except psycopg.OperationalError as error:
        raise ConnectionLost(str(error)) from error
    try:
        yield
    except BaseException as error:
        if not transaction.__exit__(type(error), error, error.__traceback__):
            raise
    else:
        transaction.__exit__(None, None, None)


def write_tables(
    connection: Connection,
    staging: Staging,
    tables: EncodedTables,
    epoch: int | None,
    between_statements: Callable[[], None] | None = None,
) -> None:
    """Write encoded tables in one transaction after the fencing check, or nothing.

    Raises psycopg's errors and :class:`StoreFenced`; the transaction is rolled
    back on any of them (the caller wraps them into ``StoreError``).
    """
    if not tables:
        return
    with begin(connection):
        check_fence(connection, epoch)
        constants = (("written_epoch", epoch or 0),)
        for mapping, mode, arrow_table in tables:
            stage = staging.table_for(mapping.table, arrow_table.column_names)
            buffer = io.BytesIO()
            pyarrow.csv.write_csv(arrow_table, buffer, _CSV)
            with connection.cursor().copy(f"COPY {stage} FROM STDIN (FORMAT csv)") as copy:
                copy.write(buffer.getvalue())
            extra = constants if mapping.table in _EPOCH_TABLES else ()
            connection.execute(statement(mapping, mode, stage, extra))
            if between_statements is not None:
                between_statements()


class DuckStyleCursor:
    """A psycopg connection that answers the small writes' DuckDB-style calls.

    ``security_queries.py`` and ``alert_queries.py`` write with
    ``cursor.execute(sql, params).fetchone()`` and ``?`` placeholders; their
    SQL is also valid PostgreSQL once ``?`` reads ``%s`` (``make_timestamp``
    and ``epoch_us`` exist as functions there, see ``postgres/schema.py``).
    So the same functions write both stores, rather than a second copy of
    each; only what these functions call is provided.
    """

    def __init__(self, connection: Connection) -> None:
        self._cursor = connection.cursor()

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> DuckStyleCursor:
        self._cursor.execute(sql.replace("%", "%%").replace("?", "%s"), list(parameters))
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall()
