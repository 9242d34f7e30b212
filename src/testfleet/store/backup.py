"""Backups: a consistent snapshot of the open database, and the checks and restore of one.

Callers: :meth:`testfleet.store.Store.snapshot` calls :func:`take_snapshot` for
the admin backup route (``coordinator/backup_api.py``) and the scheduled
backups (``coordinator/backup_schedule.py``); ``testfleet restore``
(``cli/backup.py``) calls :func:`restore_snapshot`.

How a snapshot is taken, from inside the coordinator that holds the file
(copying the file from outside misses what is still in the WAL):

1. ``ATTACH`` a new file beside DuckDB's open database (under the same key when
   the store is encrypted: a backup of an encrypted database stays encrypted),
2. ``COPY FROM DATABASE ... (SCHEMA)``: tables, constraints, indexes and
   sequences (at their current values); the schema changes only at start-up,
3. one transaction that copies every table, in foreign-key order (DuckDB's own
   ``COPY FROM DATABASE`` copies data in an order that can break a foreign
   key, seen with 1.5.5). The transaction is a single MVCC snapshot, so the
   copy holds every commit before it began and none after, and it is a reader
   of the source: the coordinator's writer is never held, its commits go on
   during the copy,
4. sequences moved past any value the source handed out meanwhile, and
   ``DETACH``, which checkpoints the new file: one self-contained file, no WAL.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from testfleet.store.encryption import DatabaseKey
from testfleet.store.errors import StoreError, wrap_error

#: The name the snapshot file is attached under while it is written.
SNAPSHOT_CATALOG = "testfleet_snapshot"


@dataclass(frozen=True, slots=True)
class SnapshotReport:
    """What a snapshot holds (after :func:`take_snapshot` or :func:`check_snapshot`)."""

    path: Path
    schema_version: int
    #: Rows per table.
    rows: dict[str, int]
    bytes: int
    seconds: float


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _attach_clause(path: Path, key: DatabaseKey | None) -> str:
    options = f" (ENCRYPTION_KEY '{_quoted(key.secret)}', ENCRYPTION_CIPHER 'GCM')" if key else ""
    return f"ATTACH '{_quoted(str(path))}' AS {SNAPSHOT_CATALOG}{options}"


def foreign_key_order(tables: Iterable[str], references: Iterable[tuple[str, str]]) -> list[str]:
    """``tables`` ordered so that each comes after every table it references.

    ``references``: (table, referenced table) pairs. Ties keep name order, so
    the order is the same every time. A cycle (none in this schema) is broken
    by name order rather than refused: DuckDB would then name the row.
    """
    remaining = sorted(set(tables))
    needs = {table: set[str]() for table in remaining}
    for table, referenced in references:
        if table in needs and referenced in needs and referenced != table:
            needs[table].add(referenced)
    ordered: list[str] = []
    while remaining:
        ready = [t for t in remaining if not needs[t] - set(ordered)] or remaining[:1]
        ordered += ready
        remaining = [t for t in remaining if t not in ready]
    return ordered


def take_snapshot(
    cursor: duckdb.DuckDBPyConnection, target: Path, key: DatabaseKey | None
) -> SnapshotReport:
    """Copy the database ``cursor`` reads (its current catalog) into a new file ``target``.

    ``cursor`` is a fresh cursor of the store's connection, not its writer:
    see the module docstring for why the writer is not held. ``target`` must
    not exist (a half-written file is removed on failure). Raises
    :class:`StoreError`.
    """
    started = time.perf_counter()
    if target.exists():
        raise StoreError(f"cannot write a snapshot to {str(target)!r}: the file exists")
    try:
        source = _current_catalog(cursor)
        cursor.execute(_attach_clause(target, key))
        try:
            rows = _copy(cursor, source)
        finally:
            cursor.execute(f"DETACH {SNAPSHOT_CATALOG}")
    except (duckdb.Error, StoreError) as error:
        for leftover in (target, target.with_name(target.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        if isinstance(error, StoreError):
            raise
        raise wrap_error(f"write a snapshot to {str(target)!r}", error) from error
    return SnapshotReport(
        path=target,
        schema_version=rows.pop("schema_migrations:version"),
        rows=rows,
        bytes=target.stat().st_size,
        seconds=time.perf_counter() - started,
    )


def _current_catalog(cursor: duckdb.DuckDBPyConnection) -> str:
    row = cursor.execute("SELECT current_database()").fetchone()
    assert row is not None
    return str(row[0])


def _copy(cursor: duckdb.DuckDBPyConnection, source: str) -> dict[str, int]:
    """Steps 2 to 4 of the module docstring; rows per table copied."""
    src, dst = _identifier(source), SNAPSHOT_CATALOG
    cursor.execute(f"COPY FROM DATABASE {src} TO {dst} (SCHEMA)")
    tables = [
        str(r[0])
        for r in cursor.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
            "AND schema_name = 'main'",
            [source],
        ).fetchall()
    ]
    references = [
        (str(r[0]), str(r[1]))
        for r in cursor.execute(
            "SELECT table_name, referenced_table FROM duckdb_constraints() "
            "WHERE database_name = ? AND constraint_type = 'FOREIGN KEY'",
            [source],
        ).fetchall()
    ]
    rows: dict[str, int] = {}
    cursor.execute("BEGIN TRANSACTION")
    try:
        for table in foreign_key_order(tables, references):
            name = _identifier(table)
            cursor.execute(f"INSERT INTO {dst}.main.{name} SELECT * FROM {src}.main.{name}")
            counted = cursor.execute(f"SELECT count(*) FROM {dst}.main.{name}").fetchone()
            rows[table] = int(counted[0]) if counted else 0
        version = cursor.execute(
            f"SELECT coalesce(max(version), 0) FROM {dst}.main.schema_migrations"
        ).fetchone()
        cursor.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise
    _catch_up_sequences(cursor, source)
    rows["schema_migrations:version"] = int(version[0]) if version else 0
    return rows


def _catch_up_sequences(cursor: duckdb.DuckDBPyConnection, source: str) -> None:
    """Move each copied sequence to where the source's is now.

    The schema (with each sequence's position) was copied before the data; a
    row committed in between may hold a later value, so the copy's sequence is
    advanced to the source's current one (which only grows): a restored
    database never hands out an id it already holds. A gap is harmless.
    """
    positions = cursor.execute(
        "SELECT database_name, sequence_name, start_value, last_value FROM duckdb_sequences() "
        "WHERE database_name IN (?, ?)",
        [source, SNAPSHOT_CATALOG],
    ).fetchall()
    source_last = {str(n): v for d, n, _, v in positions if d == source and v is not None}
    for database, name, start, last in positions:
        if database != SNAPSHOT_CATALOG or str(name) not in source_last:
            continue
        at = int(last) if last is not None else int(start) - 1
        behind = int(source_last[str(name)]) - at
        if behind > 0:
            sequence = f"{SNAPSHOT_CATALOG}.main.{_identifier(str(name))}"
            cursor.execute(f"SELECT max(nextval('{_quoted(sequence)}')) FROM range({behind})")


#: Each a query that returns rows only when the snapshot disagrees with itself,
#: and what those rows mean. Foreign keys already hold attempts and results to
#: their tasks and workers; these are the links no constraint states.
CONSISTENCY_CHECKS = (
    (
        "SELECT t.task_id FROM distributed_tasks t WHERE t.current_attempt_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM task_execution_history h "
        "WHERE h.id = t.current_attempt_id) LIMIT 5",
        "tasks whose current attempt is not in task_execution_history",
    ),
    (
        "SELECT r.attempt_id FROM task_results r WHERE NOT EXISTS "
        "(SELECT 1 FROM task_execution_history h WHERE h.id = r.attempt_id) LIMIT 5",
        "results of attempts that are not in task_execution_history",
    ),
    (
        "SELECT r.attempt_id FROM task_results r JOIN task_execution_history h "
        "ON h.id = r.attempt_id WHERE h.task_id <> r.task_id LIMIT 5",
        "results filed under another task than their attempt's",
    ),
)


def check_snapshot(cursor: duckdb.DuckDBPyConnection, path: Path) -> SnapshotReport:
    """Rows per table and the consistency checks of an opened snapshot (a store's cursor).

    Raises :class:`StoreError` naming the first check that fails. The schema
    version was already checked when the store opened the file (a version
    newer than this code is refused there).
    """
    started = time.perf_counter()
    try:
        tables = [
            str(r[0])
            for r in cursor.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' ORDER BY table_name"
            ).fetchall()
        ]
        rows: dict[str, int] = {}
        for table in tables:
            counted = cursor.execute(f"SELECT count(*) FROM {_identifier(table)}").fetchone()
            rows[table] = int(counted[0]) if counted else 0
        for query, meaning in CONSISTENCY_CHECKS:
            found = cursor.execute(query).fetchall()
            if found:
                examples = ", ".join(repr(r[0]) for r in found)
                raise StoreError(
                    f"the snapshot {str(path)!r} is inconsistent: {meaning} ({examples})"
                )
        version = cursor.execute(
            "SELECT coalesce(max(version), 0) FROM schema_migrations"
        ).fetchone()
    except duckdb.Error as error:
        raise wrap_error(f"check the snapshot {str(path)!r}", error) from error
    return SnapshotReport(
        path=path,
        schema_version=int(version[0]) if version else 0,
        rows=rows,
        bytes=path.stat().st_size if path.exists() else 0,
        seconds=time.perf_counter() - started,
    )


def remove_database_files(path: Path) -> None:
    """Remove a database file and its WAL (a restore's leftovers, or a ``--force`` target)."""
    for leftover in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
