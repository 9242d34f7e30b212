"""The coordinator's store on PostgreSQL (issue 13: failover needs a shared database).

Callers: :func:`testfleet.store.open_store` opens one for a ``postgresql://``
``--store``; the coordinator uses it through the store contract exactly as it
uses the DuckDB :class:`~testfleet.store.store.Store`: ``load_state`` at start,
``prepare``/``commit`` per turn of its loop, reads from the API's threads.
The leadership code opens it with the ``epoch`` it won, so its writes are
fenced (``writer.py``).

Writes go through psycopg on one writer connection guarded by a lock (one
writer, as on DuckDB). Reads reuse DuckDB's queries unchanged: an in-memory
DuckDB attaches the PostgreSQL database read-only through DuckDB's postgres
extension (loaded from the ``duckdb-extension-postgres`` wheel's file, never
downloaded) and every read, users' SQL and Parquet export runs the very same
SQL as on a DuckDB file. Each DuckDB transaction is a PostgreSQL transaction
at REPEATABLE READ (the extension's default), so a read sees one committed
state, never half a batch. The read connections are also opened with
``default_transaction_read_only``, so users' SQL cannot write through them
even by the extension's ``postgres_query``.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar, cast

import duckdb
import psycopg
import psycopg.errors

from testfleet.domain.records import WriteBatch
from testfleet.store.alert_queries import AlertTables
from testfleet.store.encryption import wheel_extension_path
from testfleet.store.errors import StoreError, StoreFenced, is_out_of_room
from testfleet.store.postgres.dsn import PostgresDsn, describe_connect_error, parse_dsn
from testfleet.store.postgres.schema import apply_pg_migrations
from testfleet.store.postgres.writer import (
    Connection,
    ConnectionLost,
    DuckStyleCursor,
    Staging,
    begin,
    check_fence,
    write_tables,
)
from testfleet.store.read_methods import StoreReads
from testfleet.store.security_tables import SecurityTables
from testfleet.store.test_history_queries import TestHistoryTables
from testfleet.store.writer import (
    EncodedTables,
    describe_batch,
    encode_checked,
    missing_references,
)

T = TypeVar("T")

#: The name the PostgreSQL database is attached under in the read-side DuckDB.
CATALOG = "fleet_pg"
POSTGRES_WHEEL = "duckdb-extension-postgres"


@dataclass(frozen=True, slots=True)
class PreparedPgBatch:
    """A batch encoded on the loop (the contract's ``PreparedWrite``)."""

    store: PostgresStore
    batch: WriteBatch
    tables: EncodedTables

    def commit(self) -> None:
        self.store.commit(self)


def postgres_extension_path() -> Path | None:
    """The postgres extension file of the installed wheel for this DuckDB, or None."""
    return wheel_extension_path("duckdb_extension_postgres", "postgres")


@functools.cache
def _loadable_extension(extension: Path) -> Path:
    """A name DuckDB can ``LOAD`` the wheel's file under.

    DuckDB finds an extension's entry point from the file's name, and the
    extension is ``postgres_scanner`` inside, while the wheel names the file
    ``postgres.duckdb_extension``; a symlink of the right name in a private
    directory (one per process, removed at exit) loads it without copying it
    or installing anything into ``~/.duckdb``.
    """
    directory = Path(tempfile.mkdtemp(prefix="testfleet-duckdb-postgres-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    link = directory / "postgres_scanner.duckdb_extension"
    link.symlink_to(extension)
    return link


def attach_read_only(dsn: PostgresDsn) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that sees ``dsn``'s tables, read-only, as its default
    catalog (:data:`CATALOG`): the store's read side, and the dispatch
    benchmark's reader of a PostgreSQL run's figures. Raises :class:`StoreError`."""
    source = f"the PostgreSQL database {dsn.masked}"
    extension = postgres_extension_path()
    if extension is None:
        raise StoreError(
            f"cannot read {source}: DuckDB's postgres extension is not installed "
            f"for DuckDB {duckdb.__version__}; install it with `pip install "
            f"{POSTGRES_WHEEL}=={duckdb.__version__}` (or testfleet[postgres])"
        )
    connection = duckdb.connect(
        ":memory:",
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )
    try:
        connection.execute(f"LOAD '{_quoted(str(_loadable_extension(extension)))}'")
        read_only = f"{dsn.conninfo()}&options=-c%20default_transaction_read_only%3Don"
        connection.execute(f"ATTACH '{_quoted(read_only)}' AS {CATALOG} (TYPE postgres, READ_ONLY)")
        connection.execute(f"USE {CATALOG}")
        # As on a DuckDB file (store.py): users' SQL must not read the
        # coordinator's files. Switched off once the extension is loaded
        # and the database attached, which need it.
        connection.execute("SET enable_external_access = false")
    except duckdb.Error as error:
        connection.close()
        raise StoreError(f"cannot attach {source} for reading: {dsn.scrub(str(error))}") from None
    return connection


class PostgresStore(StoreReads, SecurityTables, AlertTables, TestHistoryTables):
    """A PostgreSQL database holding the coordinator's tables (see the module docstring).

    ``dsn``: ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE``. ``epoch``:
    the lease epoch this coordinator leads under (its writes are refused with
    :class:`StoreFenced` once another leads), or None for no fencing. Opening
    creates or migrates the schema. Every failure raises :class:`StoreError`,
    whose message never holds the password.
    """

    def __init__(self, dsn: str, *, epoch: int | None = None) -> None:
        self._dsn: PostgresDsn = parse_dsn(dsn)
        self._source = f"the PostgreSQL database {self._dsn.masked}"
        self._epoch = epoch
        self._write_lock = threading.Lock()
        self._writer: Connection | None = None
        self._staging: Staging | None = None
        self._closed = False
        writer = self._writer_connection()
        try:
            self._schema_version = apply_pg_migrations(writer, source=self._source)
            self._staging = Staging(writer)
            self._reader = self._attach()
        except BaseException:
            writer.close()
            raise

    @property
    def path(self) -> str:
        """The DSN with its password masked (what messages and the API show)."""
        return self._dsn.masked

    @property
    def epoch(self) -> int | None:
        """The lease epoch this store writes under (None: not fenced)."""
        return self._epoch

    @property
    def schema_version(self) -> int:
        return self._schema_version

    # -- connections -------------------------------------------------------------

    def _connect(self) -> Connection:
        try:
            return psycopg.connect(self._dsn.conninfo(), autocommit=True)
        except psycopg.Error as error:
            raise describe_connect_error(self._dsn, error) from None

    def _writer_connection(self) -> Connection:
        """The writer connection, reconnected if the server dropped it (a restart):
        the next batch then goes in, or fails with a clear error."""
        connection = self._writer
        if connection is None or connection.closed or connection.broken:
            if connection is not None:
                connection.close()
            self._writer = None
            connection = self._connect()
            if self._staging is not None:
                self._staging = Staging(connection)
            self._writer = connection
        return connection

    def _with_writer(self, run: Callable[[Connection, Staging], T]) -> T:
        """``run`` on the writer connection; once more on a new connection when the
        old one was found dead at its BEGIN (a server restart or failover of
        PostgreSQL: nothing of the transaction was sent, so running it again
        cannot store anything twice). A connection lost later fails the write."""
        try:
            return run(self._writer_connection(), self._require_staging())
        except ConnectionLost:
            return run(self._writer_connection(), self._require_staging())

    def _require_staging(self) -> Staging:
        assert self._staging is not None  # made in __init__, before any write
        return self._staging

    def _attach(self) -> duckdb.DuckDBPyConnection:
        return attach_read_only(self._dsn)

    # -- writing -------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        """Commit one turn's changes in one transaction (see ``Store.write``)."""
        self.commit(self.prepare(batch))

    def prepare(self, batch: WriteBatch) -> PreparedPgBatch:
        """Encode ``batch`` now, on the caller's thread (DuckDB's encoder, unchanged)."""
        return PreparedPgBatch(self, batch, encode_checked(batch))

    def commit(
        self,
        prepared: PreparedPgBatch,
        *,
        between_statements: Callable[[], None] | None = None,
    ) -> None:
        """Write a prepared batch in one transaction, fenced (see ``writer.py``)."""
        with self._write_lock:
            self._require_open()
            try:
                self._with_writer(
                    lambda connection, staging: write_tables(
                        connection, staging, prepared.tables, self._epoch, between_statements
                    )
                )
            except StoreFenced:
                raise
            except psycopg.Error as error:
                operation = f"write {describe_batch(prepared.batch)} to {self._source}"
                if isinstance(error, psycopg.errors.ForeignKeyViolation):
                    # Named as on DuckDB (the read side runs the same lookup).
                    missing = self._explain_foreign_key(prepared.batch)
                    if missing:
                        operation += f" (attempts or results refer to {missing})"
                raise _wrap(self._dsn, operation, error) from None

    def _explain_foreign_key(self, batch: WriteBatch) -> str:
        try:
            with self._cursor() as cursor:
                return missing_references(cursor, batch)
        except duckdb.Error:  # the explanation is a courtesy, the error is not
            return ""

    def _security_write(self, operation: str, write: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """A token, audit or alert write: one fenced transaction under the write lock,
        running the shared DuckDB-style functions on psycopg (``DuckStyleCursor``)."""
        with self._write_lock:
            self._require_open()

            def transaction(connection: Connection, staging: Staging) -> T:
                with begin(connection):
                    check_fence(connection, self._epoch)
                    # The shared functions use only execute/fetchone/fetchall.
                    return write(cast(duckdb.DuckDBPyConnection, DuckStyleCursor(connection)))

            try:
                return self._with_writer(transaction)
            except StoreFenced:
                raise
            except psycopg.Error as error:
                raise _wrap(self._dsn, f"{operation} in {self._source}", error) from None

    # -- reading (StoreReads) ----------------------------------------------------------

    def _require_open(self) -> duckdb.DuckDBPyConnection:
        if self._closed:
            raise StoreError(f"the store for {self._source} is closed")
        return self._reader

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self._require_open().cursor()
        cursor.execute(f"USE {CATALOG}")
        return cursor

    def _read(self, operation: str, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        try:
            with self._cursor() as cursor:
                return query(cursor)
        except duckdb.Error as error:
            raise _wrap(self._dsn, f"{operation} from {self._source}", error) from None

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections (waiting for a write in progress). Safe to call twice."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self._writer is not None:
                self._writer.close()
            self._reader.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _wrap(dsn: PostgresDsn, operation: str, error: Exception) -> StoreError:
    """``error`` (psycopg's or DuckDB's) as a :class:`StoreError`, password taken out."""
    return StoreError(
        f"could not {operation}: {dsn.scrub(str(error)).strip()}",
        retryable=is_out_of_room(error),
    )


def _quoted(text: str) -> str:
    return text.replace("'", "''")
