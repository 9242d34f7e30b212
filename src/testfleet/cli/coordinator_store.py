"""``testfleet coordinator``'s choice of store: a DuckDB file, or PostgreSQL with failover.

Callers: :func:`testfleet.cli.processes.coordinator`. ``--db FILE`` (the
default, ``testfleet.duckdb``) runs the one coordinator of that file, as
always. ``--store postgresql://…`` (or ``$TESTFLEET_STORE``, so Kubernetes can
pass it from a Secret) runs a coordinator that stands by until it wins the
lease in that database and leads while it holds it
(``coordinator/roles.py``). Options that only mean something for a DuckDB
file (its encryption key, its backups) are refused with ``--store``, naming
what to use instead.
"""

from __future__ import annotations

from pathlib import Path

from testfleet.cli.app import fail
from testfleet.store.opening import STORE_ENV

DEFAULT_DB = Path("testfleet.duckdb")


def choose_store(
    db: Path | None,
    store: str | None,
    *,
    db_key: bool,
    backups: bool,
) -> Path | str:
    """The DuckDB file or the PostgreSQL DSN to run on; a bad combination ends
    the command in one line (the DSN's password never shown)."""
    if store is not None and not store.strip():
        store = None
    if store is None:
        return db if db is not None else DEFAULT_DB
    from testfleet.store.postgres.dsn import is_postgres_dsn

    if db is not None:
        fail(
            f"give one store: --db FILE (DuckDB) or --store postgresql://... (or ${STORE_ENV}), "
            "not both"
        )
    if not is_postgres_dsn(store):
        shown = store.split("://", 1)[0] + "://..." if "://" in store else "a plain string"
        fail(
            f"--store (or ${STORE_ENV}) must be a postgresql:// or postgres:// URL, not "
            f"{shown}; for a DuckDB file use --db FILE"
        )
    if db_key:
        fail(
            "--db-key-file / TESTFLEET_DB_KEY encrypt a DuckDB file; with --store, encrypt "
            "PostgreSQL's storage and connections on the server instead"
        )
    if backups:
        fail(
            "--backup-dir / --backup-every back up a DuckDB file; with --store, back up "
            "the database with PostgreSQL's tools (pg_dump, or its base backups)"
        )
    return store


def masked(dsn: str) -> str:
    """The DSN for a person to read: its password replaced by ``***``."""
    from testfleet.store import StoreError
    from testfleet.store.postgres.dsn import parse_dsn

    try:
        return parse_dsn(dsn).masked
    except StoreError as exc:
        fail(str(exc))
