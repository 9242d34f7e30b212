"""The limits and table names of the live database's read API (``testfleet sql``
and ``testfleet export``), without DuckDB.

Callers: ``store/live_query.py`` (which enforces them and re-exports them),
the coordinator's query API (``coordinator/query_api.py``) and the CLI
(``cli/data.py``), whose option bounds and ``export`` arguments are these.
They live here, not in ``store/``, so that the CLI can declare its options
without importing the store package: that pulls in DuckDB and pyarrow, about
1.3 s of every ``testfleet`` command's start on a small machine, ``testfleet
run`` included.
"""

from __future__ import annotations

from enum import StrEnum

DEFAULT_MAX_ROWS = 1000
MAX_ROWS_LIMIT = 100_000
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 60.0


class ExportTable(StrEnum):
    """The tables ``testfleet export`` writes (the schema's, see ``schema.py``)."""

    WORKER_NODES = "worker_nodes"
    DISTRIBUTED_TASKS = "distributed_tasks"
    TASK_EXECUTION_HISTORY = "task_execution_history"
    TASK_RESULTS = "task_results"
    BENCHMARK_RESULTS = "benchmark_results"
    TEST_RESULTS = "test_results"
    SCHEMA_MIGRATIONS = "schema_migrations"
