"""The coordinator's store on PostgreSQL (``--store postgresql://...``; issue 13).

See ``store.py`` for the design, ``schema.py`` for the tables, ``writer.py``
for the batch writes and fencing, ``dsn.py`` for connection strings.

``PostgresStore`` is imported on first use: psycopg is the optional
``postgres`` extra, and a DuckDB-only install must still import
``testfleet.store`` (which asks :func:`is_postgres_dsn`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from testfleet.store.postgres.dsn import is_postgres_dsn

if TYPE_CHECKING:
    from testfleet.store.postgres.store import PostgresStore

__all__ = ["PostgresStore", "is_postgres_dsn"]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from testfleet.store.postgres.store import PostgresStore

        return PostgresStore
    raise AttributeError(name)
