"""Group commit: one coordinator turn's changes written in one transaction.

Callers: ``Store.prepare`` calls :func:`encode_batch` on the coordinator's
event loop once per turn (a snapshot of the records), and ``Store.commit``
calls :func:`write_tables` with the result from a worker thread, under the
store's write lock. Every task, attempt, result and worker that changed in the
turn goes in together, so durability costs one commit per turn rather than
one per event, and the batch is all-or-nothing: the coordinator acknowledges
submissions and results only after this returns. :func:`write_batch` does
both at once (tests and tools that write a file directly).

How rows get in:

* Each table gets one ``INSERT ... SELECT ... FROM <arrow table>``. Tasks and
  attempts the batch says are new (``WriteBatch.new_rows``) are inserted, the others
  updated (only their mutable columns: a task's spec is encoded once, when
  its row is inserted); without that knowledge rows are upserted (``ON
  CONFLICT (key) DO UPDATE``). Bulk inserts from Arrow run at about a million
  rows a second, against about a thousand with ``executemany``.
* Results are the exception: the first one recorded for an attempt stands
  (``ON CONFLICT DO NOTHING``, first per key within a batch), so a re-sent
  copy never rewrites whether the original counted as the outcome. Benchmark
  rows (one per batch size of a counted benchmark result) are derived from
  that result and are immutable the same way: first per (attempt, batch
  size) stands.
* Within a batch the last record per key wins. This is needed, not only
  convenient: DuckDB refuses an upsert statement in which the same key appears
  twice.
* Tables are written in foreign-key order, workers, tasks, attempts, results,
  so every referenced row exists (or was just written) before a row that
  references it; benchmark rows (no foreign keys) come last, after the result
  they are derived from.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from typing import Any, TypeVar

import duckdb

from testfleet.domain.records import (
    AttemptRecord,
    ResultRecord,
    TaskRecord,
    WriteBatch,
)
from testfleet.store.errors import rollback_after_error, wrap_error
from testfleet.store.rows import (
    ATTEMPTS,
    BENCHMARKS,
    RESULTS,
    TASKS,
    TESTS,
    WORKERS,
    TableMapping,
)

R = TypeVar("R")
K = TypeVar("K")


def last_per_key(records: Sequence[R], key: Callable[[R], K]) -> list[R]:
    """Keep the last record for each key (the record's latest state in the turn)."""
    latest: dict[K, R] = {}
    for record in records:
        latest[key(record)] = record
    return list(latest.values())


def first_per_key(records: Sequence[R], key: Callable[[R], K]) -> list[R]:
    """Keep the first record for each key (for results: the first report stands)."""
    first: dict[K, R] = {}
    for record in records:
        first.setdefault(key(record), record)
    return list(first.values())


class WriteMode(Enum):
    """How a group of rows goes in (see :func:`encode_batch`)."""

    UPSERT = "upsert"
    INSERT = "insert"
    UPDATE = "update"
    INSERT_NEW_ONLY = "insert new only"


def statement(
    mapping: TableMapping[Any],
    mode: WriteMode,
    source: str,
    constants: tuple[tuple[str, int], ...] = (),
) -> str:
    """The statement that writes ``source``'s rows into ``mapping``'s table.

    ``constants``: columns set to the same value in every row written, beside
    the mapped ones (the PostgreSQL store's ``written_epoch``); DuckDB's
    writer passes none, so its rows keep the column's default.
    """
    names = [name for name, _ in constants]
    values = [str(int(value)) for _, value in constants]
    columns = ", ".join([*mapping.column_names, *names])
    selected = ", ".join([*mapping.column_names, *values])
    if mode is WriteMode.INSERT:
        return f"INSERT INTO {mapping.table} ({columns}) SELECT {selected} FROM {source}"
    if mode is WriteMode.UPDATE:
        updates = ", ".join(
            [
                *(
                    f"{name} = {source}.{name}"
                    for name in mapping.update_column_names
                    if name not in mapping.key_names
                ),
                *(f"{name} = {value}" for name, value in zip(names, values, strict=True)),
            ]
        )
        matches = " AND ".join(
            f"{mapping.table}.{name} = {source}.{name}" for name in mapping.key_names
        )
        return f"UPDATE {mapping.table} SET {updates} FROM {source} WHERE {matches}"
    if mode is WriteMode.INSERT_NEW_ONLY:
        # A result is immutable once recorded. A worker re-sends results it has
        # not seen acknowledged (say the coordinator crashed after committing
        # but before the ack): the copy must not overwrite the original, whose
        # ``counted`` flag says whether it was the task's outcome. The same
        # holds for the benchmark rows derived from a result.
        return (
            f"INSERT INTO {mapping.table} ({columns}) SELECT {selected} FROM {source} "
            f"ON CONFLICT ({mapping.conflict_target}) DO NOTHING"
        )
    updates = ", ".join(
        f"{name} = excluded.{name}"
        for name in [*mapping.column_names, *names]
        if name not in mapping.key_names
    )
    return (
        f"INSERT INTO {mapping.table} ({columns}) SELECT {selected} FROM {source} "
        f"ON CONFLICT ({mapping.conflict_target}) DO UPDATE SET {updates}"
    )


EncodedTables = list[tuple[TableMapping[Any], WriteMode, Any]]


def _split_by_new(
    mapping: TableMapping[R], records: Sequence[R], key: Callable[[R], K], new: set[K] | None
) -> EncodedTables:
    """Rows known to be new are inserted, the others updated; with nothing known
    (``new`` is None) every row is upserted (see ``WriteBatch.new_rows``)."""
    if new is None:
        return [(mapping, WriteMode.UPSERT, mapping.to_arrow(records))] if records else []
    inserts = [r for r in records if key(r) in new]
    updates = [r for r in records if key(r) not in new] if inserts else records
    encoded: EncodedTables = []
    if inserts:
        encoded.append((mapping, WriteMode.INSERT, mapping.to_arrow(inserts)))
    if updates:
        encoded.append((mapping, WriteMode.UPDATE, mapping.to_arrow(updates, for_update=True)))
    return encoded


def _task_id(task: TaskRecord) -> str:
    return task.task_id


def _attempt_id(attempt: AttemptRecord) -> int:
    return attempt.attempt_id


def encode_batch(batch: WriteBatch) -> EncodedTables:
    """The batch as (table, Arrow table) pairs in write order, deduplicated.

    Done before the transaction starts, so a record that cannot be encoded
    (a value out of range, a document orjson cannot serialize) fails the write
    without touching the database.
    """
    workers = last_per_key(batch.workers, lambda w: w.worker_id)
    tasks = last_per_key(batch.tasks, _task_id)
    attempts = last_per_key(batch.attempts, _attempt_id)
    results = first_per_key(batch.results, lambda r: r.attempt_id)
    benchmark_rows = first_per_key(batch.benchmark_rows, lambda b: (b.attempt_id, b.batch_size))
    pairs: EncodedTables = []
    if workers:
        pairs.append((WORKERS, WriteMode.UPSERT, WORKERS.to_arrow(workers)))
    new = batch.new_rows
    pairs += _split_by_new(TASKS, tasks, _task_id, None if new is None else new.task_ids)
    pairs += _split_by_new(
        ATTEMPTS, attempts, _attempt_id, None if new is None else new.attempt_ids
    )
    if results:
        # A result is immutable once recorded (see statement).
        pairs.append((RESULTS, WriteMode.INSERT_NEW_ONLY, RESULTS.to_arrow(results)))
    if benchmark_rows:
        # Derived from a result, and as immutable as it.
        pairs.append((BENCHMARKS, WriteMode.INSERT_NEW_ONLY, BENCHMARKS.to_arrow(benchmark_rows)))
    test_rows = first_per_key(batch.test_rows, lambda t: (t.task_id, t.nodeid))
    if test_rows:
        # A test is recorded once per task: a copy from a re-sent result (or a
        # repeat after a coordinator restart) never replaces the first.
        pairs.append((TESTS, WriteMode.INSERT_NEW_ONLY, TESTS.to_arrow(test_rows)))
    return pairs


def encode_checked(batch: WriteBatch) -> EncodedTables:
    """:func:`encode_batch`, a record that cannot be encoded raised as ``StoreError``
    (both stores' ``prepare``)."""
    try:
        return encode_batch(batch)
    except (ValueError, TypeError, OverflowError) as error:
        raise wrap_error(f"encode {describe_batch(batch)}", error) from error


def write_tables(
    cursor: duckdb.DuckDBPyConnection,
    tables: EncodedTables,
    between_statements: Callable[[], None] | None = None,
) -> None:
    """Write encoded tables (from :func:`encode_batch`) in one transaction, or nothing.

    ``cursor`` is the store's writer connection; the caller holds the write
    lock. Nothing to write means no transaction. Any error rolls the whole
    batch back and propagates (``Store.commit`` wraps it).

    The whole transaction, ``BEGIN`` to ``COMMIT``, is one ``execute`` of one
    SQL text, every Arrow table registered under its own view name first.
    Each ``execute`` gives up the GIL and must take it back when it returns,
    and on the coordinator the loop thread holds the GIL for up to a switch
    interval at a time: one call per statement (as before) paid that wait a
    dozen times per commit (``benchmarks/store_write.py --breakdown``).

    ``between_statements`` runs after each statement while the transaction is
    open (a test reads the store there, to show that no reader sees half a
    batch); only then are the statements executed one by one.
    """
    if not tables:
        return
    views = [f"incoming_{index}_{mapping.table}" for index, (mapping, _, _) in enumerate(tables)]
    statements = [
        statement(mapping, mode, view)
        for view, (mapping, mode, _) in zip(views, tables, strict=True)
    ]
    registered: list[str] = []
    try:
        # The views belong to the writer's own cursor and are dropped below.
        for view, (_, _, arrow_table) in zip(views, tables, strict=True):
            cursor.register(view, arrow_table)
            registered.append(view)
        if between_statements is None:
            cursor.execute(";\n".join(["BEGIN TRANSACTION", *statements, "COMMIT"]))
        else:
            cursor.execute("BEGIN TRANSACTION")
            for sql in statements:
                cursor.execute(sql)
                between_statements()
            cursor.execute("COMMIT")
    except BaseException:
        # BaseException too: a KeyboardInterrupt between statements must not
        # leave a half-written batch in an open transaction. A failed statement
        # inside the one execute leaves its transaction open (aborted): rolled
        # back here as well.
        rollback_after_error(cursor)
        raise
    finally:
        for view in registered:
            cursor.unregister(view)


#: CPython's switch interval while a commit is in flight (the default is 5 ms).
#: DuckDB's Python binding takes the GIL back several times per commit (after
#: the ``execute``, and to scan each registered Arrow table), and each time it
#: waits for the thread holding it, the coordinator's busy loop, to reach the
#: end of its interval. Measured beside a busy thread
#: (``benchmarks/store_write.py --breakdown``), a dispatch-shaped commit took
#: about half as long at 0.5 ms; the cost is more frequent switches only while
#: another thread waits for the GIL.
COMMIT_SWITCH_INTERVAL_SECONDS = 0.0005

_handoff_lock = threading.Lock()
_handoff_depth = 0
_handoff_previous = 0.0


@contextmanager
def gil_handoff() -> Iterator[None]:
    """A short switch interval for the duration of a commit (see
    :data:`COMMIT_SWITCH_INTERVAL_SECONDS`), the previous one restored after.

    Callers: ``Store.commit`` around its transaction. The interval is the
    process's; nested or concurrent commits (two stores in one process, as in
    tests) share one counter, so the last one out restores it.
    """
    global _handoff_depth, _handoff_previous
    with _handoff_lock:
        if _handoff_depth == 0:
            _handoff_previous = sys.getswitchinterval()
            sys.setswitchinterval(min(_handoff_previous, COMMIT_SWITCH_INTERVAL_SECONDS))
        _handoff_depth += 1
    try:
        yield
    finally:
        with _handoff_lock:
            _handoff_depth -= 1
            if _handoff_depth == 0:
                sys.setswitchinterval(_handoff_previous)


def write_batch(cursor: duckdb.DuckDBPyConnection, batch: WriteBatch) -> None:
    """Encode and upsert everything in ``batch`` in one transaction, or nothing."""
    write_tables(cursor, encode_batch(batch))


def missing_references(cursor: duckdb.DuckDBPyConnection, batch: WriteBatch) -> str:
    """Name the tasks and workers the batch's attempts and results refer to but nobody wrote.

    Called by ``Store.write`` after a foreign-key failure (the transaction is
    already rolled back). DuckDB's own message can name the wrong key when the
    referenced table was written earlier in the same transaction (seen with
    1.5.6), so the store finds the culprits itself. Empty if none are found.
    """
    referencing: list[AttemptRecord | ResultRecord] = [*batch.attempts, *batch.results]
    task_ids = {r.task_id for r in referencing} - {t.task_id for t in batch.tasks}
    worker_ids = {r.worker_id for r in referencing} - {w.worker_id for w in batch.workers}
    parts: list[str] = []
    for table, key, wanted, what in (
        ("distributed_tasks", "task_id", task_ids, "unknown tasks"),
        ("worker_nodes", "worker_id", worker_ids, "unknown workers"),
    ):
        if not wanted:
            continue
        cursor.execute(
            f"SELECT {key} FROM {table} WHERE {key} IN ({', '.join('?' * len(wanted))})",
            sorted(wanted),
        )
        missing = sorted(wanted - {row[0] for row in cursor.fetchall()})
        if missing:
            parts.append(f"{what} {', '.join(repr(m) for m in missing)}")
    return "; ".join(parts)


def describe_batch(batch: WriteBatch) -> str:
    """How error messages name a batch (both stores)."""
    return (
        f"a batch of {len(batch.tasks)} tasks, {len(batch.attempts)} attempts, "
        f"{len(batch.results)} results, {len(batch.workers)} workers and "
        f"{len(batch.benchmark_rows)} benchmark rows and {len(batch.test_rows)} test rows"
    )
