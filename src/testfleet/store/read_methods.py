"""The read side of the coordinator's store, shared by both databases.

Callers: :class:`~testfleet.store.store.Store` (a DuckDB file) and
:class:`~testfleet.store.postgres.PostgresStore` (PostgreSQL, read through
DuckDB's postgres extension) inherit these methods, and through them the REST
routes, the dashboards and the coordinator's start-up read. Every method runs
the same DuckDB SQL (``queries.py``, ``analysis.py``, ...) on a cursor that sees
the store's tables: the subclass says how to get one (:meth:`StoreReads._read`,
:meth:`StoreReads._cursor`). Writing it once means both databases answer every
read the same way, which the store suite checks by running on both.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, BinaryIO, TypeVar

import duckdb

from testfleet.analysis.regressions import Sample
from testfleet.domain.benchmark import BenchmarkRow
from testfleet.domain.enums import ShownStatus, TaskStatus, TaskType
from testfleet.domain.pytest_tasks import TestResultRow
from testfleet.domain.records import (
    AttemptRecord,
    RecoveredState,
    ResultRecord,
    TaskRecord,
    WorkerRecord,
)
from testfleet.domain.work_keys import SpeedSample
from testfleet.store import analysis, live_query, pytest_queries, queries, speed_queries
from testfleet.store.errors import StoreError, is_out_of_room
from testfleet.store.regression_queries import regression_samples

T = TypeVar("T")


class StoreReads:
    """Every read of the store contract over "a DuckDB cursor that sees the tables"."""

    #: How error messages name the database (a file, or a masked DSN).
    _source: str

    def _require_open(self) -> object:
        """Raise ``StoreError`` when the store is closed (the subclass knows how)."""
        raise NotImplementedError

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A fresh DuckDB cursor that sees the tables (users' queries and exports)."""
        raise NotImplementedError

    def _read(self, operation: str, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``query`` on a fresh cursor of its own; wrap the database's errors."""
        raise NotImplementedError

    def _shown(self, text: str) -> str:
        """An error's text as a person may see it: PostgreSQL's store takes out the
        DSN's password (DuckDB's postgres extension can quote its connection string)."""
        return text

    # -- reading ---------------------------------------------------------------

    def load_state(self) -> RecoveredState:
        """Open tasks, their current open attempts, all workers, and the next attempt id."""
        return self._read("load the coordinator's state", queries.load_state)

    def all_task_ids(self) -> set[str]:
        """Every stored task id (the coordinator's duplicate check, loaded once at start)."""
        return self._read("list task ids", queries.all_task_ids)

    def existing_task_ids(self, task_ids: Collection[str]) -> set[str]:
        """Which of ``task_ids`` are already stored (the duplicate-submission check)."""
        return self._read(
            "look up task ids", lambda cursor: queries.existing_task_ids(cursor, task_ids)
        )

    def list_tasks(
        self,
        *,
        statuses: Collection[TaskStatus | ShownStatus] | None = None,
        task_type: TaskType | None = None,
        worker_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[TaskRecord]:
        """A page of tasks ordered by ``create_time`` then ``task_id``
        (``newest_first``: the other way round, for the dashboard's lists).

        ``statuses=None`` means any status; an empty collection matches
        nothing. Raises ``ValueError`` for a negative ``limit`` or ``offset``.
        """
        return self._read(
            "list tasks",
            lambda cursor: queries.list_tasks(
                cursor,
                statuses=statuses,
                task_type=task_type,
                worker_id=worker_id,
                limit=limit,
                offset=offset,
                newest_first=newest_first,
            ),
        )

    def count_tasks(
        self,
        *,
        statuses: Collection[TaskStatus | ShownStatus] | None = None,
        task_type: TaskType | None = None,
        worker_id: str | None = None,
    ) -> int:
        """How many tasks match the filters (the total behind :meth:`list_tasks`' pages)."""
        return self._read(
            "count tasks",
            lambda cursor: queries.count_tasks(
                cursor, statuses=statuses, task_type=task_type, worker_id=worker_id
            ),
        )

    def get_task(self, task_id: str) -> TaskRecord | None:
        return self._read("read a task", lambda cursor: queries.get_task(cursor, task_id))

    def get_attempts(self, task_id: str) -> list[AttemptRecord]:
        """A task's attempts ordered by attempt number, then id."""
        return self._read("read attempts", lambda cursor: queries.get_attempts(cursor, task_id))

    def get_results(self, task_id: str) -> list[ResultRecord]:
        """Every result of a task, including those not counted, ordered by attempt id."""
        return self._read("read results", lambda cursor: queries.get_results(cursor, task_id))

    def get_counted_result(self, task_id: str) -> ResultRecord | None:
        """The result that is the task's outcome (``counted=True``), if any."""
        return self._read(
            "read the counted result", lambda cursor: queries.get_counted_result(cursor, task_id)
        )

    def list_workers(self) -> list[WorkerRecord]:
        """Every worker ever registered, ordered by ``worker_id``."""
        return self._read("list workers", queries.list_workers)

    def status_counts(self) -> dict[TaskStatus, int]:
        """Tasks per status; every :class:`TaskStatus` is a key (0 when none)."""
        return self._read("count tasks by status", queries.status_counts)

    def attempt_count(self) -> int:
        """How many attempts (rows of ``task_execution_history``) are stored."""
        return self._read("count attempts", queries.attempt_count)

    # -- benchmark analysis ----------------------------------------------------

    def benchmark_compare(
        self,
        model: str,
        *,
        precision: str | None = None,
        hardware: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """The latest run per (hardware, device, precision, batch size) of ``model``.

        Each dict holds that run's figures (throughput, latency mean and
        percentiles, memory; or the error of a batch size that failed, e.g.
        ``out_of_memory``), ``runs`` and ``failed_runs``; times are epoch
        seconds. Simulated runs form groups of their own. Ordered by batch
        size, hardware, device, precision. ``[]`` for a model with no rows.
        See :func:`testfleet.store.analysis.benchmark_compare`.
        """
        return self._read(
            "compare benchmark results",
            lambda cursor: analysis.benchmark_compare(
                cursor, model, precision=precision, hardware=hardware, since=since
            ),
        )

    def benchmark_latest_per_batch(self, *, models: int = 50) -> list[dict[str, Any]]:
        """:meth:`benchmark_compare` for the first ``models`` models at once, each
        row with its ``model`` (the dashboard's batch-size curves). See
        :func:`testfleet.store.analysis.benchmark_latest_per_batch`."""
        return self._read(
            "read the latest benchmark runs",
            lambda cursor: analysis.benchmark_latest_per_batch(cursor, models=models),
        )

    def benchmark_history(
        self,
        model: str,
        *,
        batch_size: int | None = None,
        precision: str | None = None,
        hardware: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Every recorded run of ``model`` (one dict per run and batch size), oldest first,
        with the change in throughput and latency from the group's previous run (in
        percent). ``limit`` keeps the most recent rows. Raises ``ValueError`` for a
        negative ``limit``. See :func:`testfleet.store.analysis.benchmark_history`.
        """
        return self._read(
            "read benchmark history",
            lambda cursor: analysis.benchmark_history(
                cursor,
                model,
                batch_size=batch_size,
                precision=precision,
                hardware=hardware,
                limit=limit,
            ),
        )

    def benchmark_models(self) -> list[str]:
        """Every model with benchmark results, sorted by name."""
        return self._read("list benchmarked models", analysis.benchmark_models)

    def regression_samples(self, per_series: int = 50) -> list[Sample]:
        """The recent runs regression detection judges (``regression_queries.py``)."""
        return self._read(
            "read regression samples", lambda cursor: regression_samples(cursor, per_series)
        )

    def get_benchmark_rows(self, task_id: str) -> list[BenchmarkRow]:
        """The benchmark rows stored for a task, by attempt id then batch size."""
        return self._read(
            "read benchmark rows", lambda cursor: analysis.benchmark_rows(cursor, task_id)
        )

    # -- users' queries -------------------------------------------------------

    def query(
        self,
        sql: str,
        *,
        max_rows: int = live_query.DEFAULT_MAX_ROWS,
        timeout_seconds: float = live_query.DEFAULT_TIMEOUT_SECONDS,
    ) -> live_query.QueryResult:
        """Run a user's read-only ``SELECT`` within a row and time limit (see
        :mod:`testfleet.store.live_query`); raises :class:`live_query.QueryError`."""
        self._require_open()
        try:
            return live_query.run_query(
                self._cursor, sql, max_rows=max_rows, timeout_seconds=timeout_seconds
            )
        except live_query.QueryError as error:
            shown = self._shown(error.message)
            if shown == error.message:
                raise
            raise live_query.QueryError(error.problem, shown) from None

    def export_parquet(self, table: live_query.ExportTable, sink: BinaryIO) -> int:
        """Write ``table`` to ``sink`` as Parquet; returns how many rows it wrote."""
        try:
            self._require_open()
            return live_query.export_parquet(self._cursor, table, sink)
        except duckdb.Error as error:
            raise StoreError(
                f"could not export {table.value} from {self._source}: "
                f"{type(error).__name__}: {self._shown(str(error))}",
                retryable=is_out_of_room(error),
            ) from None

    # -- test runs -------------------------------------------------------------

    def run_test_rows(
        self, run_id: str, *, after_seq: int = 0, limit: int = 10_000
    ) -> list[TestResultRow]:
        """A run's recorded tests after ``after_seq``, in order (one page of ``limit``)."""
        return self._read(
            "read a run's test results",
            lambda cursor: pytest_queries.run_test_rows(
                cursor, run_id, after_seq=after_seq, limit=limit
            ),
        )

    def run_tasks(self, run_id: str) -> list[pytest_queries.RunTask]:
        """Every test task (chunk or rerun) of ``run_id``."""
        return self._read(
            "read a run's tasks", lambda cursor: pytest_queries.run_tasks(cursor, run_id)
        )

    def speed_samples(self, limit: int = speed_queries.DEFAULT_LIMIT) -> list[SpeedSample]:
        """Recent finished work, oldest first, to seed the speed books at start-up."""
        return self._read(
            "read finished work for worker speeds",
            lambda cursor: speed_queries.speed_samples(cursor, limit),
        )

    def test_durations(self, project: str) -> dict[str, float]:
        """Recent median duration per node id of ``project`` (a ProjectSource key)."""
        return self._read(
            "read test durations", lambda cursor: pytest_queries.test_durations(cursor, project)
        )
