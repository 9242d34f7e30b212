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
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar

import duckdb

from testfleet.analysis.regressions import Sample
from testfleet.domain.benchmark import BenchmarkRow
from testfleet.domain.enums import ShownStatus, TaskStatus, TaskType
from testfleet.domain.pytest_tasks import TestResultRow
from testfleet.domain.records import (
    AttemptRecord,
    RecoveredState,
    ResultRecord,
    TaskRecord,
    WorkerRecord,
    WriteBatch,
)
from testfleet.store import analysis, live_query, pytest_queries, queries
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
from testfleet.store.regression_queries import regression_samples
from testfleet.store.schema import apply_migrations
from testfleet.store.security_tables import SecurityTables
from testfleet.store.test_history_queries import TestHistoryTables
from testfleet.store.writer import EncodedTables, encode_batch, missing_references, write_tables

T = TypeVar("T")

MEMORY = ":memory:"


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A write batch already encoded to Arrow (see :meth:`Store.prepare`); the
    contract's :class:`~testfleet.store.contract.PreparedWrite`.

    ``batch`` is kept only to describe an error; its records may have changed
    since, the tables have not.
    """

    store: Store
    batch: WriteBatch
    tables: EncodedTables

    def commit(self) -> None:
        """Write it in one transaction (see :meth:`Store.commit`)."""
        self.store.commit(self)


class Store(SecurityTables, AlertTables, TestHistoryTables):
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
        try:
            return PreparedBatch(self, batch, encode_batch(batch))
        except (ValueError, TypeError, OverflowError) as error:
            raise wrap_error(f"encode {_describe(batch)}", error) from error

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
        with self._write_lock:
            self._require_open()
            try:
                write_tables(self._writer, prepared.tables, between_statements)
            except duckdb.Error as error:
                operation = f"write {_describe(batch)} to {self._source}"
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

    # -- reading ---------------------------------------------------------------

    def load_state(self) -> RecoveredState:
        """Open tasks, their current open attempts, all workers, and the next attempt id."""
        return self._read("load the coordinator's state", queries.load_state)

    def all_task_ids(self) -> set[str]:
        """Every stored task id (the coordinator's duplicate check, loaded once at start)."""
        return self._read("list task ids", queries.all_task_ids)

    def existing_task_ids(self, task_ids: Collection[str]) -> set[str]:
        """Which of ``task_ids`` are already stored (the duplicate-submission check)."""
        return self._read(
            "look up task ids", lambda cursor: queries.existing_task_ids(cursor, task_ids)
        )

    def list_tasks(
        self,
        *,
        statuses: Collection[TaskStatus | ShownStatus] | None = None,
        task_type: TaskType | None = None,
        worker_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[TaskRecord]:
        """A page of tasks ordered by ``create_time`` then ``task_id``
        (``newest_first``: the other way round, for the dashboard's lists).

        ``statuses=None`` means any status; an empty collection matches
        nothing. Raises ``ValueError`` for a negative ``limit`` or ``offset``.
        """
        return self._read(
            "list tasks",
            lambda cursor: queries.list_tasks(
                cursor,
                statuses=statuses,
                task_type=task_type,
                worker_id=worker_id,
                limit=limit,
                offset=offset,
                newest_first=newest_first,
            ),
        )

    def count_tasks(
        self,
        *,
        statuses: Collection[TaskStatus | ShownStatus] | None = None,
        task_type: TaskType | None = None,
        worker_id: str | None = None,
    ) -> int:
        """How many tasks match the filters (the total behind :meth:`list_tasks`' pages)."""
        return self._read(
            "count tasks",
            lambda cursor: queries.count_tasks(
                cursor, statuses=statuses, task_type=task_type, worker_id=worker_id
            ),
        )

    def get_task(self, task_id: str) -> TaskRecord | None:
        return self._read("read a task", lambda cursor: queries.get_task(cursor, task_id))

    def get_attempts(self, task_id: str) -> list[AttemptRecord]:
        """A task's attempts ordered by attempt number, then id."""
        return self._read("read attempts", lambda cursor: queries.get_attempts(cursor, task_id))

    def get_results(self, task_id: str) -> list[ResultRecord]:
        """Every result of a task, including those not counted, ordered by attempt id."""
        return self._read("read results", lambda cursor: queries.get_results(cursor, task_id))

    def get_counted_result(self, task_id: str) -> ResultRecord | None:
        """The result that is the task's outcome (``counted=True``), if any."""
        return self._read(
            "read the counted result", lambda cursor: queries.get_counted_result(cursor, task_id)
        )

    def list_workers(self) -> list[WorkerRecord]:
        """Every worker ever registered, ordered by ``worker_id``."""
        return self._read("list workers", queries.list_workers)

    def status_counts(self) -> dict[TaskStatus, int]:
        """Tasks per status; every :class:`TaskStatus` is a key (0 when none)."""
        return self._read("count tasks by status", queries.status_counts)

    def attempt_count(self) -> int:
        """How many attempts (rows of ``task_execution_history``) are stored."""
        return self._read("count attempts", queries.attempt_count)

    # -- benchmark analysis ----------------------------------------------------

    def benchmark_compare(
        self,
        model: str,
        *,
        precision: str | None = None,
        hardware: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """The latest run per (hardware, device, precision, batch size) of ``model``.

        Each dict holds that run's figures (throughput, latency mean and
        percentiles, memory; or the error of a batch size that failed, e.g.
        ``out_of_memory``), ``runs`` and ``failed_runs``; times are epoch
        seconds. Simulated runs form groups of their own. Ordered by batch
        size, hardware, device, precision. ``[]`` for a model with no rows.
        See :func:`testfleet.store.analysis.benchmark_compare`.
        """
        return self._read(
            "compare benchmark results",
            lambda cursor: analysis.benchmark_compare(
                cursor, model, precision=precision, hardware=hardware, since=since
            ),
        )

    def benchmark_latest_per_batch(self, *, models: int = 50) -> list[dict[str, Any]]:
        """:meth:`benchmark_compare` for the first ``models`` models at once, each
        row with its ``model`` (the dashboard's batch-size curves). See
        :func:`testfleet.store.analysis.benchmark_latest_per_batch`."""
        return self._read(
            "read the latest benchmark runs",
            lambda cursor: analysis.benchmark_latest_per_batch(cursor, models=models),
        )

    def benchmark_history(
        self,
        model: str,
        *,
        batch_size: int | None = None,
        precision: str | None = None,
        hardware: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Every recorded run of ``model`` (one dict per run and batch size), oldest first,
        with the change in throughput and latency from the group's previous run (in
        percent). ``limit`` keeps the most recent rows. Raises ``ValueError`` for a
        negative ``limit``. See :func:`testfleet.store.analysis.benchmark_history`.
        """
        return self._read(
            "read benchmark history",
            lambda cursor: analysis.benchmark_history(
                cursor,
                model,
                batch_size=batch_size,
                precision=precision,
                hardware=hardware,
                limit=limit,
            ),
        )

    def benchmark_models(self) -> list[str]:
        """Every model with benchmark results, sorted by name."""
        return self._read("list benchmarked models", analysis.benchmark_models)

    def regression_samples(self, per_series: int = 50) -> list[Sample]:
        """The recent runs regression detection judges (``regression_queries.py``)."""
        return self._read(
            "read regression samples", lambda cursor: regression_samples(cursor, per_series)
        )

    def get_benchmark_rows(self, task_id: str) -> list[BenchmarkRow]:
        """The benchmark rows stored for a task, by attempt id then batch size."""
        return self._read(
            "read benchmark rows", lambda cursor: analysis.benchmark_rows(cursor, task_id)
        )

    # -- users' queries -------------------------------------------------------

    def query(
        self,
        sql: str,
        *,
        max_rows: int = live_query.DEFAULT_MAX_ROWS,
        timeout_seconds: float = live_query.DEFAULT_TIMEOUT_SECONDS,
    ) -> live_query.QueryResult:
        """Run a user's read-only ``SELECT`` within a row and time limit (see
        :mod:`testfleet.store.live_query`); raises :class:`live_query.QueryError`."""
        self._require_open()
        return live_query.run_query(
            self._cursor, sql, max_rows=max_rows, timeout_seconds=timeout_seconds
        )

    def export_parquet(self, table: live_query.ExportTable, sink: BinaryIO) -> int:
        """Write ``table`` to ``sink`` as Parquet; returns how many rows it wrote."""
        try:
            self._require_open()
            return live_query.export_parquet(self._cursor, table, sink)
        except duckdb.Error as error:
            raise wrap_error(f"export {table.value} from {self._source}", error) from error

    # -- test runs -------------------------------------------------------------

    def run_test_rows(
        self, run_id: str, *, after_seq: int = 0, limit: int = 10_000
    ) -> list[TestResultRow]:
        """A run's recorded tests after ``after_seq``, in order (one page of ``limit``)."""
        return self._read(
            "read a run's test results",
            lambda cursor: pytest_queries.run_test_rows(
                cursor, run_id, after_seq=after_seq, limit=limit
            ),
        )

    def run_tasks(self, run_id: str) -> list[pytest_queries.RunTask]:
        """Every test task (chunk or rerun) of ``run_id``."""
        return self._read(
            "read a run's tasks", lambda cursor: pytest_queries.run_tasks(cursor, run_id)
        )

    def test_durations(self, project: str) -> dict[str, float]:
        """Recent median duration per node id of ``project`` (a ProjectSource key)."""
        return self._read(
            "read test durations", lambda cursor: pytest_queries.test_durations(cursor, project)
        )

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


def _describe(batch: WriteBatch) -> str:
    return (
        f"a batch of {len(batch.tasks)} tasks, {len(batch.attempts)} attempts, "
        f"{len(batch.results)} results, {len(batch.workers)} workers and "
        f"{len(batch.benchmark_rows)} benchmark rows and {len(batch.test_rows)} test rows"
    )
