"""The coordinator's storage: a DuckDB file (``Store``) or PostgreSQL (``postgres/``);
schema and migrations, batch writer, queries.

Only the coordinator process opens the database (``testfleet demo`` runs one
in-process); everything else asks the coordinator's API. :func:`open_store`
picks the implementation from a path or a ``postgresql://`` DSN.
"""

from testfleet.store.errors import StoreError, StoreFenced
from testfleet.store.opening import STORE_ENV, open_store
from testfleet.store.store import Store

__all__ = ["STORE_ENV", "Store", "StoreError", "StoreFenced", "open_store"]
