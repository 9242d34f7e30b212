"""The coordinator's DuckDB file: open it, write batches to it, read from it.

Callers: the coordinator opens one :class:`Store` at start-up (it is the only
process that opens the file; DuckDB lets one process hold it for writing),
reloads its state with :meth:`Store.load_state`, then once per turn of its
event loop encodes the turn's batch with :meth:`Store.prepare` and commits it
from a worker thread (``asyncio.to_thread``), while its API handlers call the
read methods from other threads. The coordinator knows the store only by its
contract (``contract.py``), which this class implements. ``testfleet demo``
and tests open a file or ``":memory:"`` the same way, and may write a batch at
once with :meth:`Store.write`.

Threads: the writer has its own cursor, guarded by a lock (there is one writer,
but a second caller waits instead of interleaving statements in one
transaction). Every read opens a fresh cursor: DuckDB cursors are separate
connections to the same database, safe to use concurrently from different
threads, and each sees the last committed state (a read never sees half a
batch).

Schema, migrations and the foreign keys DuckDB can live with are described in
``schema.py``; the record-to-row mapping in ``rows.py``; the transaction in
``writer.py``; the reads in ``queries.py``; the benchmark analysis in
``analysis.py``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar

import duckdb

from testfleet.domain.records import (
    WriteBatch,
)
from testfleet.store.alert_queries import AlertTables
from testfleet.store.backup import SnapshotReport, check_snapshot, take_snapshot
from testfleet.store.encryption import (
    DatabaseKey,
    attach_encrypted,
    describe_plain_open_error,
    use_catalog,
)
from testfleet.store.errors import (
    StoreError,
    describe_open_error,
    rollback_after_error,
    wrap_error,
)
from testfleet.store.read_methods import StoreReads
from testfleet.store.schema import apply_migrations
from testfleet.store.security_tables import SecurityTables
from testfleet.store.test_history_queries import TestHistoryTables
from testfleet.store.writer import (
    EncodedTables,
    describe_batch,
    encode_checked,
    gil_handoff,
    missing_references,
    write_tables,
)

T = TypeVar("T")

MEMORY = ":memory:"


class BatchCommitter(Protocol):
    """A store that commits prepared batches (DuckDB's :class:`Store`, and
    ``postgres.PostgresStore``, whose batches are the same encoded tables)."""

    def commit(self, prepared: PreparedBatch) -> None: ...


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A write batch already encoded to Arrow (see :meth:`Store.prepare`); the
    contract's :class:`~testfleet.store.contract.PreparedWrite`.

    ``batch`` is kept only to describe an error; its records may have changed
    since, the tables have not.
    """

    store: BatchCommitter
    batch: WriteBatch
    tables: EncodedTables

    def commit(self) -> None:
        """Write it in one transaction (see :meth:`Store.commit`)."""
        self.store.commit(self)


class Store(StoreReads, SecurityTables, AlertTables, TestHistoryTables):
    """One DuckDB database holding tasks, attempts, results, workers and benchmark rows.

    ``path`` is a file (created if missing; its directory must exist) or
    ``":memory:"`` (a private database that disappears on :meth:`close`).
    Opening creates the schema or applies the migrations the file lacks.
    Every storage failure raises :class:`StoreError`. Another process that has
    the file open makes opening fail; a second ``Store`` on the same file in
    the *same* process would share DuckDB's cached instance instead, so the
    coordinator opens exactly one.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        encryption_key: DatabaseKey | None = None,
        snapshot_dir: Path | None = None,
    ) -> None:
        """Open (creating and migrating) the database at ``path``.

        ``snapshot_dir``: the one directory :meth:`snapshot` may write backups
        into (DuckDB's ``allowed_directories``; everything else stays shut to
        SQL). None: no backups.

        ``threads`` caps DuckDB's worker threads (None: DuckDB's default, one per
        core). The coordinator passes 1: its writes are many small batches, for
        which DuckDB's parallelism costs more than it gives (measured about 10 %
        more dispatch throughput here), and it leaves the cores to the event loop.

        ``encryption_key`` opens (or creates) the file encrypted with it (see
        :mod:`testfleet.store.encryption`); a wrong key, a key for a plain file
        or no key for an encrypted one raise :class:`StoreError` saying so.
        """
        self._path = str(path)
        self._source = "the in-memory database" if self._path == MEMORY else repr(self._path)
        self._encrypted = encryption_key is not None and self._path != MEMORY
        self._key = encryption_key if self._encrypted else None
        self._snapshot_dir = None if snapshot_dir is None else Path(snapshot_dir).absolute()
        # Switched off below, once the snapshot directory is allowed.
        external_at_start = self._encrypted or self._snapshot_dir is not None
        config: dict[str, str | bool | int | float | list[str]] = {
            # No SQL run in this database reads or writes other files: users'
            # queries (live_query.py) must not read the coordinator's machine.
            # It cannot be switched back on while the database is open; a
            # feature that needs a directory (backups) lists it in
            # ``allowed_directories`` instead. An encrypted store switches it
            # off once its extension is loaded and its file attached (loading
            # reads the extension's file).
            "enable_external_access": external_at_start,
            # Never fetch an extension from the network.
            "autoinstall_known_extensions": False,
        }
        if threads is not None:
            config["threads"] = threads
        try:
            connection = duckdb.connect(MEMORY if self._encrypted else self._path, config=config)
        except duckdb.Error as error:
            raise describe_plain_open_error(self._path, error) or describe_open_error(
                self._path, error
            ) from error
        if self._encrypted:
            assert encryption_key is not None
            try:
                attach_encrypted(connection, self._path, encryption_key)
            except BaseException as error:
                connection.close()
                if isinstance(error, duckdb.Error):
                    raise describe_open_error(self._path, error) from error
                raise
        if external_at_start:
            try:
                if self._snapshot_dir is not None:
                    allowed = _sql_string(str(self._snapshot_dir) + os.sep)
                    connection.execute(f"SET allowed_directories = [{allowed}]")
                connection.execute("SET enable_external_access = false")
            except BaseException as error:
                connection.close()
                if isinstance(error, duckdb.Error):
                    raise describe_open_error(self._path, error) from error
                raise
        try:
            self._schema_version = apply_migrations(connection, source=self._source)
            self._writer = self._cursor_of(connection)
        except BaseException as error:
            connection.close()
            if isinstance(error, duckdb.Error):
                raise wrap_error(f"prepare the schema of {self._source}", error) from error
            raise
        self._connection: duckdb.DuckDBPyConnection | None = connection
        self._write_lock = threading.Lock()

    @property
    def path(self) -> str:
        """The file this store opened, or ``":memory:"``."""
        return self._path

    @property
    def schema_version(self) -> int:
        """The schema version of the open database (the latest this code knows)."""
        return self._schema_version

    # -- writing ---------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        """Commit one turn's changes in one transaction: all of them, or none.

        Records are upserted (the last one per task, attempt or worker in the
        batch wins; the first result per attempt stands). Raises
        :class:`StoreError` if anything fails, a foreign key for instance (an
        attempt of a task that was never written); then nothing of the batch is
        stored, and the coordinator must not acknowledge what it held.
        """
        self.commit(self.prepare(batch))

    def prepare(self, batch: WriteBatch) -> PreparedBatch:
        """Encode ``batch`` into Arrow tables now: a snapshot of the records.

        The coordinator calls this on its loop, then hands the result to
        :meth:`commit` in a thread while it goes on changing the same records
        for the next turn (the commit of one turn overlaps the work of the next).
        """
        return PreparedBatch(self, batch, encode_checked(batch))

    def commit(
        self,
        prepared: PreparedBatch,
        *,
        between_statements: Callable[[], None] | None = None,
    ) -> None:
        """Write a prepared batch in one transaction (see :meth:`write`).

        ``between_statements`` runs after each statement, inside the open
        transaction: tests read the store there from another thread.
        """
        batch = prepared.batch
        with self._write_lock, gil_handoff():
            self._require_open()
            try:
                write_tables(self._writer, prepared.tables, between_statements)
            except duckdb.Error as error:
                operation = f"write {describe_batch(batch)} to {self._source}"
                if isinstance(error, duckdb.ConstraintException) and "foreign key" in str(error):
                    try:
                        missing = missing_references(self._writer, batch)
                    except duckdb.Error:  # the explanation is a courtesy, the error is not
                        missing = ""
                    if missing:
                        operation += f" (attempts or results refer to {missing})"
                raise wrap_error(operation, error) from error

    # -- backups (backup.py) ----------------------------------------------------

    @property
    def snapshot_dir(self) -> Path | None:
        """Where :meth:`snapshot` may write (None: backups are off for this store)."""
        return self._snapshot_dir

    def snapshot(self, name: str) -> SnapshotReport:
        """Write a consistent copy of the database to ``name`` in :attr:`snapshot_dir`.

        Called from a thread by the backup route and the scheduled backups. It
        reads through a cursor of its own and never takes the write lock: the
        loop's commits go on meanwhile (see ``backup.py``). An encrypted store's
        snapshot is encrypted under the same key. ``name`` is a file name, not a
        path; the file must not exist.
        """
        if self._snapshot_dir is None:
            raise StoreError(f"backups are off for {self._source}: no snapshot directory")
        if not name or Path(name).name != name or name in (".", ".."):
            raise StoreError(f"a snapshot name must be a plain file name, not {name!r}")
        connection = self._require_open()
        with self._cursor_of(connection) as cursor:
            return take_snapshot(cursor, self._snapshot_dir / name, self._key)

    def check_snapshot(self) -> SnapshotReport:
        """Rows per table and the consistency checks of this database (``testfleet
        restore`` opens a snapshot as a store and asks this)."""
        return check_snapshot(self._cursor(), Path(self._path))

    # -- tokens, the audit trail, revocations: SecurityTables (security_tables.py)

    def _security_write(self, operation: str, write: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        with self._write_lock:
            self._require_open()
            cursor = self._writer
            try:
                cursor.execute("BEGIN TRANSACTION")
                try:
                    result = write(cursor)
                    cursor.execute("COMMIT")
                except BaseException:
                    rollback_after_error(cursor)
                    raise
            except duckdb.Error as error:
                raise wrap_error(f"{operation} in {self._source}", error) from error
            return result

    # -- lifetime --------------------------------------------------------------

    def close(self) -> None:
        """Close the database (waiting for a write in progress). Safe to call twice."""
        with self._write_lock:
            connection, self._connection = self._connection, None
            if connection is None:
                return
            try:
                self._writer.close()
                connection.close()
            except duckdb.Error as error:
                raise wrap_error(f"close {self._source}", error) from error

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _require_open(self) -> duckdb.DuckDBPyConnection:
        connection = self._connection
        if connection is None:
            raise StoreError(f"the store for {self._source} is closed")
        return connection

    def _cursor_of(self, connection: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """A fresh cursor of ``connection`` that reads this store's database (an
        encrypted one is attached beside DuckDB's default, see encryption.py)."""
        cursor = connection.cursor()
        return use_catalog(cursor) if self._encrypted else cursor

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor of the open database (users' queries and exports)."""
        return self._cursor_of(self._require_open())

    def _read(self, operation: str, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``query`` on a fresh cursor of its own; wrap DuckDB's errors."""
        connection = self._require_open()
        try:
            with self._cursor_of(connection) as cursor:
                return query(cursor)
        except duckdb.Error as error:
            raise wrap_error(f"{operation} from {self._source}", error) from error


def _sql_string(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
