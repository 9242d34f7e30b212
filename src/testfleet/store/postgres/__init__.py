"""The coordinator's store on PostgreSQL (``--store postgresql://...``; issue 13).

See ``store.py`` for the design, ``schema.py`` for the tables, ``writer.py``
for the batch writes and fencing, ``dsn.py`` for connection strings.
"""

from testfleet.store.postgres.dsn import is_postgres_dsn
from testfleet.store.postgres.store import PostgresStore

__all__ = ["PostgresStore", "is_postgres_dsn"]
