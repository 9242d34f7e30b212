"""Which store a ``--db`` path or ``--store`` DSN means, opened.

Callers: the coordinator's start-up (``--store``/``TESTFLEET_STORE`` or
``--db``) and the CLI tools that open the store directly (``testfleet tokens
create``) call :func:`open_store` instead of naming a class, so a DuckDB file
and a PostgreSQL database are one switch apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from testfleet.store.encryption import DatabaseKey
from testfleet.store.errors import StoreError
from testfleet.store.postgres.dsn import is_postgres_dsn
from testfleet.store.store import Store

if TYPE_CHECKING:  # imported when needed: psycopg is the optional postgres extra
    from testfleet.store.postgres.store import PostgresStore

#: The environment variable that may hold the PostgreSQL DSN (a Kubernetes Secret).
STORE_ENV = "TESTFLEET_STORE"


def open_store(
    spec: str | Path,
    *,
    epoch: int | None = None,
    threads: int | None = None,
    encryption_key: DatabaseKey | None = None,
    snapshot_dir: Path | None = None,
) -> Store | PostgresStore:
    """A PostgreSQL store for a ``postgresql://`` (or ``postgres://``) ``spec``, else
    the DuckDB file (or ``":memory:"``) at ``spec``.

    ``epoch``: the lease epoch a PostgreSQL store fences its writes with (see
    ``postgres/writer.py``); a DuckDB file has one coordinator and takes none.
    DuckDB-only options given with a DSN raise :class:`StoreError` saying what
    PostgreSQL uses instead; so does a PostgreSQL store without psycopg.
    Both classes implement the store contract (``contract.py``).
    """
    text = str(spec)
    if not is_postgres_dsn(text):
        if "://" in text:
            raise StoreError(
                f"the store {text.split('://', 1)[0]}://... is neither a DuckDB file path "
                "nor a postgresql:// URL; give --db FILE or --store postgresql://USER@HOST/DB"
            )
        if epoch is not None:
            raise StoreError("a lease epoch applies to a PostgreSQL store only, not a DuckDB file")
        return Store(
            text, threads=threads, encryption_key=encryption_key, snapshot_dir=snapshot_dir
        )
    if encryption_key is not None:
        raise StoreError(
            "a database key (--db-key-file, TESTFLEET_DB_KEY) encrypts a DuckDB file; "
            "PostgreSQL's data is encrypted by its server or disk, so give no key with --store"
        )
    if snapshot_dir is not None:
        raise StoreError(
            "backups into a snapshot directory are DuckDB's; back a PostgreSQL store up "
            "with pg_dump or the server's own backups instead"
        )
    try:
        from testfleet.store.postgres.store import PostgresStore
    except ImportError as error:
        raise StoreError(
            f"a PostgreSQL store needs psycopg ({error.name} is missing); install it with "
            "`pip install 'testfleet[postgres]'`"
        ) from None
    return PostgresStore(text, epoch=epoch)
