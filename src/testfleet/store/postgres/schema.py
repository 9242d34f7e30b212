"""The PostgreSQL schema: the DuckDB migrations in PostgreSQL's words, plus the lease.

Callers: :class:`~testfleet.store.postgres.PostgresStore` calls
:func:`apply_pg_migrations` on every open, before it attaches the database to
DuckDB for reads.

Why translate rather than keep a second schema by hand: both stores must hold
the same tables and columns in the same order (the read SQL is shared, and a
few small writes insert positionally), and the version numbers must mean the
same thing. DuckDB's DDL is nearly PostgreSQL's: only ``DOUBLE`` needs a word
(``DOUBLE PRECISION``); ``VARCHAR``, ``JSON``, ``TIMESTAMP``, sequences and
indexes read the same. Version 8 is PostgreSQL's own (a ``NOT NULL`` DuckDB
cannot add, and the ``coordinator_lease`` table of the failover protocol).

Two SQL functions make the shared small writes and reads run unchanged:
``make_timestamp(bigint)`` (DuckDB's microseconds-to-timestamp, which
PostgreSQL has only with six arguments) and ``epoch_us(timestamp)``.

Concurrency: two coordinators starting at once on an empty database must not
both create the schema. Each migration step runs in a transaction that first
takes a transaction-level advisory lock (:data:`MIGRATION_LOCK_KEY`) and then
reads the version again, so the second waits and then finds the work done.
"""

from __future__ import annotations

import re

import psycopg

from testfleet.store.errors import StoreError
from testfleet.store.schema import MIGRATIONS, Migration

#: pg_advisory_xact_lock's key for schema changes (an arbitrary constant: ASCII "tfschema").
MIGRATION_LOCK_KEY = 0x7466736368656D61

_FUNCTIONS = (
    # Exact: integer microseconds, no floating point on the way.
    """
    CREATE OR REPLACE FUNCTION make_timestamp(us BIGINT) RETURNS TIMESTAMP
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT TIMESTAMP '1970-01-01' + us * INTERVAL '1 microsecond' $$
    """,
    """
    CREATE OR REPLACE FUNCTION epoch_us(t TIMESTAMP) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (extract(epoch FROM t) * 1000000)::BIGINT $$
    """,
)

_PG_V8 = (
    "ALTER TABLE distributed_tasks ADD COLUMN written_epoch BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE task_execution_history ADD COLUMN written_epoch BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE task_results ADD COLUMN written_epoch BIGINT NOT NULL DEFAULT 0",
    # The failover lease (docs: the HA protocol): one row, its epoch rises by
    # one at every change of leader; the loop's writes check it (fencing).
    """
    CREATE TABLE coordinator_lease (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL DEFAULT 0,
        leader_id TEXT,
        leader_url TEXT,
        backend_pid INTEGER,
        renewed_at TIMESTAMPTZ,
        settings_digest TEXT
    )
    """,
    "INSERT INTO coordinator_lease (id, epoch) VALUES (1, 0)",
)


def _translate(statement: str) -> str:
    """A DuckDB DDL statement in PostgreSQL's words (see the module docstring)."""
    return re.sub(r"\bDOUBLE\b", "DOUBLE PRECISION", statement)


def _pg_migrations() -> tuple[Migration, ...]:
    steps: list[Migration] = []
    for migration in MIGRATIONS:
        statements: tuple[str, ...]
        if migration.version == 8:
            statements = _PG_V8
        else:
            statements = tuple(_translate(s) for s in migration.statements)
        if migration.version == 1:
            statements = (*_FUNCTIONS, *statements)
        steps.append(Migration(migration.version, migration.description, statements))
    return tuple(steps)


PG_MIGRATIONS = _pg_migrations()
LATEST_VERSION = PG_MIGRATIONS[-1].version

_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMP NOT NULL
)
"""


def _version(connection: psycopg.Connection[tuple[object, ...]]) -> int:
    row = connection.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def apply_pg_migrations(
    connection: psycopg.Connection[tuple[object, ...]],
    *,
    source: str,
    migrations: tuple[Migration, ...] = PG_MIGRATIONS,
) -> int:
    """Bring the database's schema up to the last of ``migrations``; its version.

    ``connection`` is in autocommit mode; each step is a transaction of its own
    under the migration lock. Raises :class:`StoreError` for a database newer
    than this code (naming both versions) or a failed step (rolled back).
    """
    latest = migrations[-1].version
    version = 0
    for migration in (None, *migrations):
        try:
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK_KEY])
                connection.execute(_CREATE_MIGRATIONS_TABLE)
                version = _version(connection)
                if version > latest:
                    raise StoreError(
                        f"{source} has schema version {version}, but this testfleet knows "
                        f"versions up to {latest} only: it was written by a newer testfleet; "
                        "upgrade testfleet to open it"
                    )
                if migration is None or migration.version <= version:
                    continue
                for statement in migration.statements:
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO schema_migrations (version, applied_at) "
                    "VALUES (%s, localtimestamp)",
                    [migration.version],
                )
                version = migration.version
        except psycopg.Error as error:
            raise StoreError(
                f"could not migrate {source} to schema version "
                f"{migration.version if migration else 1}; it stays at version {version}: "
                f"{error}"
            ) from error
    return version
