"""What the coordinator asks of its store: the contract any database behind it keeps.

Callers: the coordinator's loop writes through :class:`StoreWriter`, its
start-up reloads state through :class:`CoordinatorStore`, and the REST routes
read through :class:`StoreReader`; none of them names a database. The DuckDB
:class:`~testfleet.store.store.Store` implements all of it today (the app
factory's typed assignment and ``tests/unit/store/test_store_contract.py``
check that it does); the failover issue adds PostgreSQL behind the same
contract.

Promises every implementation keeps (ARCHITECTURE.md):

* A prepared write is a snapshot: :meth:`StoreWriter.prepare` encodes the
  batch's records on the caller's thread, so the coordinator may change them
  for the next turn while :meth:`PreparedWrite.commit` writes this one from
  another thread.
* A commit is one transaction, all of it or none, and raises
  :class:`~testfleet.store.errors.StoreError` on any failure (the coordinator
  then stops: nothing of the batch may be acknowledged).
* Reads see only committed batches, never half of one, and may run in other
  threads while a commit is in progress.

Some reads answer types defined beside the DuckDB queries (a run's tasks,
live SQL results, the exportable tables); they hold plain values, and a
second implementation returns the same types.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, BinaryIO, Protocol

from testfleet.analysis.regressions import Sample
from testfleet.domain.alerts import AlertRecord, AlertState, NotificationRecord
from testfleet.domain.enums import ShownStatus, TaskStatus, TaskType
from testfleet.domain.pytest_tasks import TestResultRow
from testfleet.domain.records import (
    AttemptRecord,
    RecoveredState,
    ResultRecord,
    TaskRecord,
    WriteBatch,
)
from testfleet.domain.work_keys import SpeedSample
from testfleet.security.audit import AuditEvent
from testfleet.security.enrolment import TokenConsumption
from testfleet.security.tokens import Role, TokenRecord
from testfleet.security.worker_revocation import WorkerRevocation
from testfleet.store.alert_queries import AttemptCounts, TestCounts
from testfleet.store.live_query import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT_SECONDS,
    ExportTable,
    QueryResult,
)
from testfleet.store.pytest_queries import RunTask
from testfleet.store.test_history_queries import (
    HISTORY_RUNS,
    ChunkRow,
    PastVerdict,
    RunSummary,
    RunTest,
    TestStats,
)


class PreparedWrite(Protocol):
    """One turn's writes, already encoded: committing it needs none of the records."""

    def commit(self) -> None:
        """Write it in one transaction (from a worker thread); raises ``StoreError``."""
        ...


class StoreWriter(Protocol):
    """How the coordinator's loop makes a turn durable (group commit)."""

    def prepare(self, batch: WriteBatch) -> PreparedWrite:
        """Encode ``batch`` now, on the loop (see the module docstring)."""
        ...


class StoreReader(Protocol):
    """The reads the REST API serves; each may run in a thread of its own."""

    @property
    def schema_version(self) -> int: ...

    def list_tasks(
        self,
        *,
        statuses: Collection[TaskStatus | ShownStatus] | None = None,
        task_type: TaskType | None = None,
        worker_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[TaskRecord]: ...

    def count_tasks(
        self,
        *,
        statuses: Collection[TaskStatus | ShownStatus] | None = None,
        task_type: TaskType | None = None,
        worker_id: str | None = None,
    ) -> int: ...

    def get_task(self, task_id: str) -> TaskRecord | None: ...

    def get_attempts(self, task_id: str) -> list[AttemptRecord]: ...

    def get_results(self, task_id: str) -> list[ResultRecord]: ...

    def status_counts(self) -> dict[TaskStatus, int]: ...

    def benchmark_compare(
        self,
        model: str,
        *,
        precision: str | None = None,
        hardware: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]: ...

    def benchmark_latest_per_batch(self, *, models: int = 50) -> list[dict[str, Any]]: ...

    def benchmark_history(
        self,
        model: str,
        *,
        batch_size: int | None = None,
        precision: str | None = None,
        hardware: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]: ...

    def benchmark_models(self) -> list[str]: ...

    def regression_samples(self, per_series: int = 50) -> list[Sample]:
        """Recent benchmark figures and test durations, for regression detection."""
        ...

    def run_test_rows(
        self, run_id: str, *, after_seq: int = 0, limit: int = 10_000
    ) -> list[TestResultRow]: ...

    def run_tasks(self, run_id: str) -> list[RunTask]: ...

    def test_durations(self, project: str) -> dict[str, float]: ...

    def speed_samples(self, limit: int = 50_000) -> list[SpeedSample]:
        """Recent finished work, oldest first (store/speed_queries.py): the
        coordinator seeds its worker speed books with it at start-up."""
        ...

    # The dashboard's Test runs and Tests pages (store/test_history_queries.py).

    def recent_runs(self, *, project: str | None = None, limit: int = 50) -> list[RunSummary]:
        """The newest test runs, newest first."""
        ...

    def run_summary(self, run_id: str) -> RunSummary | None: ...

    def run_chunks(self, run_id: str, limit: int = 500) -> list[ChunkRow]: ...

    def run_problem_tests(self, run_id: str, limit: int = 200) -> list[RunTest]:
        """A run's failing tests and those that passed only on a rerun."""
        ...

    def run_slowest_tests(self, run_id: str, limit: int = 10) -> list[RunTest]: ...

    def earlier_runs(self, run_id: str, project: str, runs: int = HISTORY_RUNS) -> list[str]:
        """The project's runs before ``run_id``, newest first."""
        ...

    def past_verdicts(
        self, run_id: str, project: str, nodeids: Sequence[str], runs: int = HISTORY_RUNS
    ) -> list[PastVerdict]:
        """These tests' verdicts in the project's runs before ``run_id``, newest first."""
        ...

    def tested_projects(self) -> list[str]: ...

    def per_test_stats(
        self,
        project: str,
        *,
        contains: str | None = None,
        runs: int = HISTORY_RUNS,
        limit: int = 500,
    ) -> list[TestStats]:
        """Per test of ``project`` over its recent runs: pass rate, flakiness, durations."""
        ...

    def count_flaky_tests(self, since: float) -> int:
        """Tests that passed only on a rerun or flipped verdict since ``since``."""
        ...

    def query(
        self,
        sql: str,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> QueryResult:
        """A user's read-only SQL within a row and time limit; raises ``QueryError``."""
        ...

    def export_parquet(self, table: ExportTable, sink: BinaryIO) -> int:
        """Write ``table`` to ``sink`` as Parquet; how many rows it wrote."""
        ...


class SecurityStore(Protocol):
    """API tokens, worker revocations and the audit trail (``coordinator/auth.py``, the admin API,
    ``tokens create --db``). Its writes are small transactions of their own,
    serialised with the loop's commits and finished before the caller answers
    (see ``Store.add_token`` for why they do not go through the loop)."""

    def add_token(self, token: TokenRecord, audit: Sequence[AuditEvent] = ()) -> None: ...

    def revoke_token(self, token_id: str, now: float, audit: Sequence[AuditEvent] = ()) -> bool: ...

    def consume_token(
        self, token_id: str, role: Role, now: float, audit: Sequence[AuditEvent] = ()
    ) -> TokenConsumption:
        """Check and use a one-time token in one transaction (enrolment)."""
        ...

    def record_audit(self, events: Sequence[AuditEvent]) -> None: ...

    def revoke_worker(
        self, revocation: WorkerRevocation, audit: Sequence[AuditEvent] = ()
    ) -> list[str]:
        """Record the revocation, revoke the worker's worker and enrol tokens, and
        append ``audit``, in one transaction; the ids of the tokens revoked."""
        ...

    def worker_revocations(self) -> dict[str, float]:
        """The latest revocation time of each revoked worker id."""
        ...

    def get_token(self, token_id: str) -> TokenRecord | None:
        """Read on every request: nothing about a token is cached."""
        ...

    def list_tokens(self) -> list[TokenRecord]: ...

    def audit_events(
        self, *, since: float | None = None, actor: str | None = None, limit: int = 1000
    ) -> list[AuditEvent]: ...


class AlertStore(Protocol):
    """Alert instances, their notifications, and the history the alert rules read
    (``coordinator/alerts/``, the alerts route). Writes are small transactions of
    their own, as :class:`SecurityStore`'s are: alerts are not coordinator state
    the loop owns, and the engine writes them off the loop's hot path."""

    def save_alerts(self, alerts: Sequence[AlertRecord]) -> None:
        """Insert or update these instances in one transaction."""
        ...

    def record_notifications(self, notifications: Sequence[NotificationRecord]) -> None: ...

    def list_alerts(
        self, *, state: AlertState | None = None, limit: int = 100
    ) -> list[AlertRecord]:
        """Stored (fired) alerts, newest first."""
        ...

    def alert_notifications(
        self, *, alert_id: str | None = None, limit: int = 100
    ) -> list[NotificationRecord]:
        """Notification results, newest first."""
        ...

    def count_attempts(self, since: float) -> AttemptCounts:
        """Attempts that ended at or after ``since``, by how."""
        ...

    def count_tests(self, since: float) -> TestCounts:
        """Test verdicts recorded at or after ``since``: decided, and flaky."""
        ...

    def last_assignment(self) -> float | None:
        """When the latest attempt started; None before the first."""
        ...


class CoordinatorStore(StoreWriter, StoreReader, SecurityStore, AlertStore, Protocol):
    """Everything a coordinator process uses: the loop's writes, the API's reads,
    and what start-up reloads and shutdown closes."""

    def load_state(self) -> RecoveredState:
        """Open tasks, their current open attempts, all workers, the next ids."""
        ...

    def all_task_ids(self) -> set[str]:
        """Every stored task id (the duplicate check, loaded once at start-up)."""
        ...

    def close(self) -> None:
        """Close the database, waiting for a commit in progress; safe to call twice."""
        ...
