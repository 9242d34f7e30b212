"""Snapshots of an open store (plain and encrypted) and their restore."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pytest
from store_builders import attempt, result, task, worker

from testfleet.domain.enums import AttemptStatus, TaskStatus
from testfleet.domain.records import WriteBatch
from testfleet.security.audit import AuditEvent, AuditKind, AuditOutcome
from testfleet.store import Store, StoreError
from testfleet.store.backup import foreign_key_order
from testfleet.store.encryption import DatabaseKey
from testfleet.store.live_query import QueryError
from testfleet.store.restore import restore_snapshot

KEY = DatabaseKey("an-example-key-0123456789abcdef", "the key file test.key")


def audit(n: int) -> AuditEvent:
    return AuditEvent(
        time=1_800_000_000.0 + n, kind=AuditKind.TASKS_SUBMITTED, outcome=AuditOutcome.ALLOWED
    )


def fill(store: Store, prefix: str, count: int) -> list[str]:
    ids = [f"{prefix}-{n:03d}" for n in range(count)]
    store.write(WriteBatch(workers=[worker("w1")], tasks=[task(i) for i in ids]))
    return ids


def test_foreign_key_order_puts_referenced_tables_first() -> None:
    order = foreign_key_order(
        ["results", "attempts", "tasks", "workers", "other"],
        [("attempts", "tasks"), ("attempts", "workers"), ("results", "attempts")],
    )
    assert order.index("tasks") < order.index("attempts") < order.index("results")
    assert order.index("workers") < order.index("attempts")
    assert sorted(order) == sorted(["results", "attempts", "tasks", "workers", "other"])


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_a_snapshot_holds_every_committed_row_and_restores(
    tmp_path: Path, key: DatabaseKey | None
) -> None:
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    with Store(tmp_path / "fleet.duckdb", encryption_key=key, snapshot_dir=snapshots) as store:
        ids = fill(store, "t", 30)
        store.write(
            WriteBatch(
                tasks=[task(ids[0], TaskStatus.COMPLETED, current_attempt_id=1)],
                attempts=[attempt(1, ids[0], status=AttemptStatus.COMPLETED)],
                results=[result(1, ids[0])],
            )
        )
        store.record_audit([audit(n) for n in range(3)])
        report = store.snapshot("one.duckdb")
        fill(store, "later", 3)  # after the snapshot: not in it
    assert report.rows["distributed_tasks"] == 30
    assert report.rows["task_results"] == 1
    assert not (snapshots / "one.duckdb.wal").exists()
    if key is not None:
        # Stays encrypted: the plain opener is refused, and no task id shows in its bytes.
        assert ids[0].encode() not in (snapshots / "one.duckdb").read_bytes()
        with pytest.raises(StoreError, match="encrypted"):
            Store(snapshots / "one.duckdb")
    restored = restore_snapshot(snapshots / "one.duckdb", tmp_path / "new.duckdb", key=key)
    assert restored.rows["distributed_tasks"] == 30
    with Store(tmp_path / "new.duckdb", encryption_key=key) as store:
        assert store.all_task_ids() == set(ids)
        assert store.get_counted_result(ids[0]) is not None
        # The audit sequence carries on past the copied rows: a new event is stored.
        store.record_audit([audit(3)])
        assert len(store.audit_events()) == 4


def test_the_writer_is_not_held_while_a_snapshot_is_copied(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    with Store(tmp_path / "fleet.duckdb", snapshot_dir=snapshots) as store:
        fill(store, "t", 10)
        done = threading.Event()
        # Hold the writer's lock as a long commit would: the snapshot still finishes.
        with store._write_lock:

            def copy() -> None:
                store.snapshot("while-locked.duckdb")
                done.set()

            copier = threading.Thread(target=copy)
            copier.start()
            assert done.wait(30), "the snapshot waited for the writer's lock"
            copier.join()
    assert (snapshots / "while-locked.duckdb").exists()


def test_a_snapshot_name_is_a_file_name_in_the_snapshot_directory(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    with Store(tmp_path / "fleet.duckdb", snapshot_dir=snapshots) as store:
        for bad in ("../escape.duckdb", "/tmp/x.duckdb", "", ".."):
            with pytest.raises(StoreError, match="plain file name"):
                store.snapshot(bad)
        store.snapshot("a.duckdb")
        with pytest.raises(StoreError, match="exists"):
            store.snapshot("a.duckdb")
    with Store(tmp_path / "other.duckdb") as store, pytest.raises(StoreError, match="off"):
        store.snapshot("a.duckdb")


def test_users_sql_still_cannot_reach_other_files_with_a_snapshot_directory(
    tmp_path: Path,
) -> None:
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    (tmp_path / "secret.csv").write_text("a\n1\n")
    with Store(tmp_path / "fleet.duckdb", snapshot_dir=snapshots) as store:
        assert store.query("SELECT current_setting('enable_external_access') AS on").rows == [
            [False]
        ]
        with pytest.raises(QueryError, match="disabled"):
            store.query(f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')")
        # Inside the snapshot directory a SELECT may read (what it finds there are
        # copies of tables it can read anyway), but nothing writes there but a backup.
        with pytest.raises(QueryError):
            store.query(f"COPY distributed_tasks TO '{snapshots / 'out.csv'}'")
        assert not (snapshots / "out.csv").exists()


def test_restore_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    with Store(tmp_path / "fleet.duckdb", snapshot_dir=snapshots) as store:
        fill(store, "t", 2)
        store.snapshot("s.duckdb")
    target = tmp_path / "existing.duckdb"
    target.write_bytes(b"keep me")
    with pytest.raises(StoreError, match="--force"):
        restore_snapshot(snapshots / "s.duckdb", target)
    assert target.read_bytes() == b"keep me"
    restore_snapshot(snapshots / "s.duckdb", target, force=True)
    with Store(target) as store:
        assert len(store.all_task_ids()) == 2


def test_restore_refuses_a_file_that_is_not_a_database_and_leaves_no_target(
    tmp_path: Path,
) -> None:
    bogus = tmp_path / "bogus.duckdb"
    bogus.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError):
        restore_snapshot(bogus, tmp_path / "new.duckdb")
    assert not (tmp_path / "new.duckdb").exists()
    with pytest.raises(StoreError, match="no snapshot"):
        restore_snapshot(tmp_path / "missing.duckdb", tmp_path / "new.duckdb")


def test_restore_refuses_an_inconsistent_snapshot(tmp_path: Path) -> None:
    snapshot = tmp_path / "s.duckdb"
    with Store(snapshot) as store:
        fill(store, "t", 1)
    # A task pointing at an attempt nobody wrote (no constraint forbids it).
    with duckdb.connect(str(snapshot)) as raw:
        raw.execute("UPDATE distributed_tasks SET current_attempt_id = 99")
    with pytest.raises(StoreError, match="current attempt is not in"):
        restore_snapshot(snapshot, tmp_path / "new.duckdb")
    assert not (tmp_path / "new.duckdb").exists()


def test_restore_refuses_a_newer_schema(tmp_path: Path) -> None:
    snapshot = tmp_path / "s.duckdb"
    Store(snapshot).close()
    with duckdb.connect(str(snapshot)) as raw:
        raw.execute("INSERT INTO schema_migrations VALUES (999, now())")
    with pytest.raises(StoreError, match="999"):
        restore_snapshot(snapshot, tmp_path / "new.duckdb")
