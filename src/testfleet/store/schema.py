"""The DuckDB schema and its migrations.

Callers: ``Store.__init__`` calls :func:`apply_migrations` on every open, so a
new file gets the whole schema and an existing one gets only the migrations it
lacks. Each migration is applied in its own transaction together with its row
in ``schema_migrations``: a migration is either fully applied and recorded, or
not at all.

The design document's tables (docs/formats.md: ``worker_nodes``,
``distributed_tasks``, ``task_execution_history``) keep their names and columns;
the columns the coordinator's records need are added beside them, and
``task_results`` holds the result documents. Three deliberate departures:

* ``distributed_tasks`` has **no** foreign key from ``worker_id`` to
  ``worker_nodes`` and **no** secondary index. DuckDB (1.5) executes an update
  of a row that has a foreign key or an indexed column changing as a delete
  plus an insert, and refuses the delete while another table's foreign key
  references the row ("Violates foreign key constraint because key ... is still
  referenced"). ``task_execution_history`` references every task, so either
  would make every status change of a task fail. Status filters are served by
  DuckDB's column scans (with zone maps), which is what DuckDB would do for a
  low-cardinality column anyway; its ART indexes only help point lookups.
* ``task_results`` references tasks and workers but **not**
  ``task_execution_history``, for the same reason: history rows have their own
  foreign keys and change as attempts progress, so a reference to them would
  make every attempt update fail.
* ``execution_time_seconds`` is ``DOUBLE`` rather than the design document's
  ``FLOAT``: DuckDB's ``FLOAT`` is 4-byte single precision and would not give
  back the seconds the coordinator wrote (1.3 would read back as 1.2999999523).

A writer must therefore write workers, then tasks, then attempts, then results
(referenced rows before the rows that reference them); see ``writer.py``.
``benchmark_results`` (version 2) has no foreign keys at all (see its
migration) and is written last, after the result it is derived from.

Migrations are append-only: never edit one that has shipped, add a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from testfleet.store.errors import StoreError, rollback_after_error


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: ``statements`` run in order in one transaction."""

    version: int
    description: str
    statements: tuple[str, ...]


_V1_STATEMENTS = (
    """
    CREATE TABLE worker_nodes (
        worker_id VARCHAR PRIMARY KEY,
        hostname VARCHAR NOT NULL,
        registration_time TIMESTAMP NOT NULL,
        last_heartbeat TIMESTAMP NOT NULL,
        status VARCHAR NOT NULL,
        capabilities JSON NOT NULL,
        hardware_metrics JSON NOT NULL,
        -- A copy of capabilities.tags, for queries that filter by tag.
        tags JSON NOT NULL,
        -- Added: how many attempts the worker runs at once.
        slots INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE distributed_tasks (
        task_id VARCHAR PRIMARY KEY,
        type VARCHAR NOT NULL,
        priority INTEGER NOT NULL,
        status VARCHAR NOT NULL,
        create_time TIMESTAMP NOT NULL,
        start_time TIMESTAMP,
        end_time TIMESTAMP,
        -- No FOREIGN KEY to worker_nodes, unlike the design document: see the module docstring.
        worker_id VARCHAR,
        attempts INTEGER NOT NULL,
        config JSON NOT NULL,
        requirements JSON NOT NULL,
        -- Added: the rest of the task document, and where the task is in its lifecycle.
        timeout_seconds DOUBLE NOT NULL,
        retry_policy JSON NOT NULL,
        queued_at TIMESTAMP NOT NULL,
        current_attempt_id INTEGER,
        not_before TIMESTAMP,
        lost_attempts INTEGER NOT NULL,
        error_class VARCHAR,
        error_message VARCHAR,
        unschedulable_reason VARCHAR
    )
    """,
    """
    CREATE TABLE task_execution_history (
        -- The attempt id (the lease the worker holds while it runs the task).
        id INTEGER PRIMARY KEY,
        task_id VARCHAR NOT NULL,
        worker_id VARCHAR NOT NULL,
        attempt INTEGER NOT NULL,
        status VARCHAR NOT NULL,
        start_time TIMESTAMP NOT NULL,
        end_time TIMESTAMP,
        -- DOUBLE, not the design document's FLOAT: see the module docstring.
        execution_time_seconds DOUBLE,
        error_message VARCHAR,
        hardware_metrics JSON NOT NULL,
        -- Added: when the worker accepted the attempt, and the classified error.
        accepted_time TIMESTAMP,
        error_class VARCHAR,
        FOREIGN KEY (task_id) REFERENCES distributed_tasks (task_id),
        FOREIGN KEY (worker_id) REFERENCES worker_nodes (worker_id)
    )
    """,
    # get_attempts(task_id) is a point lookup; history is referenced by no other
    # table, so an index here does not stand in the way of updates.
    "CREATE INDEX history_task_id ON task_execution_history (task_id)",
    """
    CREATE TABLE task_results (
        attempt_id INTEGER PRIMARY KEY,
        task_id VARCHAR NOT NULL,
        worker_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        received_time TIMESTAMP NOT NULL,
        -- False for a late result of an attempt that was no longer current.
        counted BOOLEAN NOT NULL,
        -- Copies of fields of the result document, for analysis queries.
        is_simulated BOOLEAN NOT NULL,
        execution_time_seconds DOUBLE NOT NULL,
        result JSON NOT NULL,
        -- No FOREIGN KEY to task_execution_history: see the module docstring.
        FOREIGN KEY (task_id) REFERENCES distributed_tasks (task_id),
        FOREIGN KEY (worker_id) REFERENCES worker_nodes (worker_id)
    )
    """,
    "CREATE INDEX results_task_id ON task_results (task_id)",
)

_V2_STATEMENTS = (
    # One row per batch size of each counted benchmark result (BenchmarkRow):
    # copies of fields of the result document in task_results, kept as columns
    # so comparisons across hardware and trends over time are plain SQL.
    #
    # No foreign keys, deliberately. The natural parent is task_results
    # (attempt_id), whose row is written in the same transaction just before
    # these (writer.py), so the writer already guarantees the reference. A
    # FOREIGN KEY would make task_results a referenced table, and DuckDB (1.5)
    # then refuses any update of a referenced row's indexed column (it runs it
    # as a delete plus an insert, see the module docstring) and has no ON
    # DELETE CASCADE: pruning old results, or any later change to
    # task_results' keys, would fail or have to delete these rows by hand
    # first. Rows here are immutable (inserted once, ON CONFLICT DO NOTHING).
    """
    CREATE TABLE benchmark_results (
        attempt_id INTEGER NOT NULL,
        batch_size INTEGER NOT NULL,
        task_id VARCHAR NOT NULL,
        worker_id VARCHAR NOT NULL,
        -- When the coordinator recorded the result (its received_time).
        recorded_time TIMESTAMP NOT NULL,
        model VARCHAR NOT NULL,
        -- Overrides, local path and input size: runs compare only within a variant.
        variant VARCHAR NOT NULL,
        hardware VARCHAR NOT NULL,
        device_name VARCHAR NOT NULL,
        precision VARCHAR NOT NULL,
        is_simulated BOOLEAN NOT NULL,
        -- NULL where this batch size failed (error_class says why, e.g. out_of_memory).
        latency_ms DOUBLE,
        latency_p50_ms DOUBLE,
        latency_p90_ms DOUBLE,
        latency_p99_ms DOUBLE,
        throughput_items_per_second DOUBLE,
        memory_mb DOUBLE,
        error_class VARCHAR,
        error_message VARCHAR,
        torch_version VARCHAR,
        transformers_version VARCHAR,
        PRIMARY KEY (attempt_id, batch_size)
    )
    """,
    # Every analysis query filters by model first.
    "CREATE INDEX benchmark_results_model ON benchmark_results (model)",
)

_V3_STATEMENTS: tuple[str, ...] = (
    # One row per test of a ``test`` task (a chunk of a pytest run), recorded
    # once per (task, test) however many attempts reported it. ``record`` is
    # the worker's whole TestRecord (every phase's report), so a client can
    # rebuild pytest's reports from it; the columns beside it are what runs,
    # duration history and flaky-test queries filter on. ``seq`` orders rows
    # as the coordinator recorded them, for polling.
    """
    CREATE TABLE test_results (
        seq BIGINT NOT NULL,
        task_id VARCHAR NOT NULL,
        nodeid VARCHAR NOT NULL,
        attempt_id BIGINT NOT NULL,
        worker_id VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        project VARCHAR NOT NULL,
        rerun INTEGER NOT NULL,
        outcome VARCHAR NOT NULL,
        duration_seconds DOUBLE NOT NULL,
        crashed BOOLEAN NOT NULL,
        recorded_time TIMESTAMP NOT NULL,
        record JSON NOT NULL,
        PRIMARY KEY (task_id, nodeid)
    )
    """,
    "CREATE INDEX test_results_run ON test_results (run_id)",
    "CREATE INDEX test_results_project ON test_results (project)",
)

_V4_STATEMENTS: tuple[str, ...] = (
    # counted (version 1) is true for the one result that is the task's
    # outcome, and false for every other, late or not.
    # What became of each result, in words (ResultDisposition): 'outcome' (the
    # task's result: counted = true), 'retried' (the attempt failed and the
    # task was tried again) or 'late' (it came after its attempt was closed
    # without it: a lost worker, a cancel, a timeout). Before this, a retried
    # first attempt's result read only as counted = false, i.e. "ignored".
    "ALTER TABLE task_results ADD COLUMN disposition VARCHAR",
    # A result that closed its attempt was received at the attempt's end time
    # (the same turn); a late one arrived after the coordinator closed it.
    """
    UPDATE task_results AS r SET disposition = CASE
        WHEN r.counted THEN 'outcome'
        WHEN h.end_time = r.received_time THEN 'retried'
        ELSE 'late' END
    FROM task_execution_history AS h WHERE h.id = r.attempt_id
    """,
    "UPDATE task_results SET disposition = CASE WHEN counted THEN 'outcome' ELSE 'late' END "
    "WHERE disposition IS NULL",
    # Set when the machine was busy as a benchmark started (BenchmarkRow.load_note):
    # its figures may be slower than the hardware's. NULL for a quiet run, and
    # for rows recorded before version 4 (their load is in task_results'
    # documents, under results.conditions.load_before).
    "ALTER TABLE benchmark_results ADD COLUMN load_note VARCHAR",
)

_V5_STATEMENTS = (
    # API tokens (testfleet.security.tokens): only a hash of each secret is
    # kept; a revoked token keeps its row (revoked is set) so the audit trail
    # can still name it.
    """
    CREATE TABLE api_tokens (
        token_id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        role VARCHAR NOT NULL,
        secret_hash VARCHAR NOT NULL,
        created TIMESTAMP NOT NULL,
        expires TIMESTAMP,
        revoked TIMESTAMP
    )
    """,
    # Append only: rows are inserted, never updated or deleted. No foreign key
    # to api_tokens: a refused request names credentials that do not exist.
    "CREATE SEQUENCE audit_events_seq START 1",
    """
    CREATE TABLE audit_events (
        seq BIGINT PRIMARY KEY DEFAULT nextval('audit_events_seq'),
        time TIMESTAMP NOT NULL,
        kind VARCHAR NOT NULL,
        outcome VARCHAR NOT NULL,
        actor VARCHAR,
        credential_id VARCHAR,
        remote VARCHAR,
        detail VARCHAR NOT NULL
    )
    """,
    # Which token submitted a task: a submitter may cancel only its own.
    # NULL for tasks submitted before version 5.
    "ALTER TABLE distributed_tasks ADD COLUMN submitted_by VARCHAR",
)

_V6_STATEMENTS = (
    # Worker ids an admin revoked (testfleet.security.worker_revocation):
    # append only, a worker may be revoked more than once; the coordinator
    # loads the latest time per id at start-up. No foreign key to
    # worker_nodes: an id may be revoked before it ever connected.
    """
    CREATE TABLE worker_revocations (
        worker_id VARCHAR NOT NULL,
        revoked_at TIMESTAMP NOT NULL,
        revoked_by VARCHAR,
        reason VARCHAR
    )
    """,
)

_V7_STATEMENTS = (
    # Alert instances that fired (testfleet.domain.alerts; pending ones live in
    # the coordinator's memory only). One row per instance, upserted as it
    # moves from firing to resolved; never deleted: the alerts page shows the
    # history. Only the primary key is indexed, and only non-key columns are
    # updated, so DuckDB updates the row in place.
    """
    CREATE TABLE alerts (
        alert_id VARCHAR PRIMARY KEY,
        rule VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        labels JSON NOT NULL,
        severity VARCHAR NOT NULL,
        state VARCHAR NOT NULL,
        summary VARCHAR NOT NULL,
        value DOUBLE NOT NULL,
        pending_since TIMESTAMP NOT NULL,
        fired_at TIMESTAMP,
        resolved_at TIMESTAMP,
        last_seen TIMESTAMP NOT NULL,
        annotations JSON NOT NULL
    )
    """,
    # Append only: one row per notification of a state (or a repeat) to one
    # webhook receiver, with what became of it. No foreign key to alerts:
    # alerts rows are updated, and DuckDB refuses updates of referenced rows
    # (see the module docstring).
    "CREATE SEQUENCE alert_notifications_seq START 1",
    """
    CREATE TABLE alert_notifications (
        seq BIGINT PRIMARY KEY DEFAULT nextval('alert_notifications_seq'),
        alert_id VARCHAR NOT NULL,
        receiver VARCHAR NOT NULL,
        alert_state VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        time TIMESTAMP NOT NULL,
        error VARCHAR,
        repeat BOOLEAN NOT NULL
    )
    """,
)

_V8_STATEMENTS = (
    # Which leader wrote a row (issue 13's failover): the lease epoch of the
    # coordinator whose loop wrote it. A DuckDB file has one coordinator and
    # always writes 0; PostgreSQL stores write their epoch (store/postgres/),
    # so a row written by a fenced-off leader could be told apart. DuckDB
    # cannot add a column with a constraint, hence no NOT NULL here (the
    # default fills every row); PostgreSQL's own version 8 has it.
    "ALTER TABLE distributed_tasks ADD COLUMN written_epoch BIGINT DEFAULT 0",
    "ALTER TABLE task_execution_history ADD COLUMN written_epoch BIGINT DEFAULT 0",
    "ALTER TABLE task_results ADD COLUMN written_epoch BIGINT DEFAULT 0",
)

_V9_STATEMENTS = (
    # Issue 14: the requirement slice an attempt was placed under (0: the task's
    # requirements, i: its fallbacks[i - 1]), and whether it was a speculative
    # copy of a straggler. Defaults fill older rows (no slices, no copies).
    "ALTER TABLE task_execution_history ADD COLUMN slice_index INTEGER DEFAULT 0",
    "ALTER TABLE task_execution_history ADD COLUMN speculative BOOLEAN DEFAULT false",
    # The task document's issue-14 fields (fallbacks, idempotent, expected_seconds)
    # as JSON, NULL while all are at their defaults; and the slice the task waits or
    # last ran under, so that the API can say which slice a queued task waits for.
    "ALTER TABLE distributed_tasks ADD COLUMN spec_extras JSON",
    "ALTER TABLE distributed_tasks ADD COLUMN slice_index INTEGER DEFAULT 0",
)

_V10_STATEMENTS = (
    # Issue 15: what ran the model (torch, onnxruntime, openvino, browser; rows
    # from before are torch's), and the outcome of the check of its outputs
    # against torch's (passed / failed, NULL where nothing was compared) with
    # the largest absolute difference found.
    "ALTER TABLE benchmark_results ADD COLUMN backend VARCHAR DEFAULT 'torch'",
    "ALTER TABLE benchmark_results ADD COLUMN output_check VARCHAR",
    "ALTER TABLE benchmark_results ADD COLUMN output_max_abs_diff DOUBLE",
)

#: Every migration, in version order starting at 1. Append only.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "design document tables, task_results", _V1_STATEMENTS),
    Migration(2, "benchmark_results, one row per benchmark batch size", _V2_STATEMENTS),
    Migration(3, "test_results, one row per test of a test task", _V3_STATEMENTS),
    Migration(
        4,
        "task_results.disposition (outcome, retried or late); benchmark_results.load_note",
        _V4_STATEMENTS,
    ),
    Migration(
        5,
        "api_tokens, audit_events; distributed_tasks.submitted_by",
        _V5_STATEMENTS,
    ),
    Migration(6, "worker_revocations", _V6_STATEMENTS),
    Migration(7, "alerts, alert_notifications", _V7_STATEMENTS),
    Migration(8, "written_epoch on tasks, attempts and results", _V8_STATEMENTS),
    Migration(9, "task_execution_history.slice_index and .speculative (issue 14)", _V9_STATEMENTS),
    Migration(
        10,
        "benchmark_results.backend, .output_check, .output_max_abs_diff (issue 15)",
        _V10_STATEMENTS,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMP NOT NULL
)
"""


def current_version(connection: duckdb.DuckDBPyConnection) -> int:
    """The highest version recorded in ``schema_migrations`` (0 for a new file)."""
    row = connection.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    assert row is not None  # an aggregate always returns one row
    return int(row[0])


def apply_migrations(
    connection: duckdb.DuckDBPyConnection,
    migrations: Sequence[Migration] = MIGRATIONS,
    *,
    source: str = "the database",
) -> int:
    """Bring the schema up to the last of ``migrations`` and return its version.

    Applies only the migrations newer than the file's version, each in its own
    transaction. ``source`` names the file in error messages. Raises
    :class:`StoreError` if the file is newer than this code (it was written by a
    later testfleet: running on it could misread or corrupt it) or if a
    migration fails (that migration is rolled back; earlier ones stay).
    Tests pass their own ``migrations`` to exercise upgrades.
    """
    _check_order(migrations)
    latest = migrations[-1].version
    connection.execute(_CREATE_MIGRATIONS_TABLE)
    version = current_version(connection)
    if version > latest:
        raise StoreError(
            f"{source} has schema version {version}, but this testfleet knows versions up "
            f"to {latest} only: it was written by a newer testfleet; upgrade testfleet to open it"
        )
    for migration in migrations:
        if migration.version <= version:
            continue
        connection.execute("BEGIN TRANSACTION")
        try:
            for statement in migration.statements:
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, current_timestamp)",
                [migration.version],
            )
            connection.execute("COMMIT")
        except duckdb.Error as error:
            rollback_after_error(connection)
            raise StoreError(
                f"could not migrate {source} to schema version {migration.version} "
                f"({migration.description}); it stays at version {version}: {error}"
            ) from error
        version = migration.version
    return version


def _check_order(migrations: Sequence[Migration]) -> None:
    """Migrations must be numbered 1, 2, 3, ...: a gap or a repeat is a programming error."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1..n in order, got {versions}")
