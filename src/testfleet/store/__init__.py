"""DuckDB storage for the coordinator: schema and migrations, batch writer, queries.

Only the coordinator process opens the database file (``testfleet demo`` runs
one in-process); everything else asks the coordinator's API.
"""

from testfleet.store.errors import StoreError
from testfleet.store.store import Store

__all__ = ["Store", "StoreError"]
