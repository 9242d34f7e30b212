"""A backup of a running coordinator under load, restored and served again.

Tasks are submitted and completed throughout; ``testfleet backup`` runs in
the middle. The snapshot is restored with ``testfleet restore`` and a new
coordinator started on the restored file must know every task that was
acknowledged before the backup command started. Scheduled backups
(``--backup-every``) run beside it and keep only the newest ``--backup-keep``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from it_fleet import Fleet

from testfleet.coordinator.backup_schedule import scheduled_backups
from testfleet.local_fleet import CoordinatorOptions
from testfleet.store.restore import restore_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = ("backup-a", "backup-b")


def run_cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testfleet", *args],
        env=fleet.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class Load:
    """Submits small batches of short tasks until stopped; remembers what was acknowledged."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.acknowledged: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        batch = 0
        # A client of its own (closed when done): the test's client is used meanwhile.
        with self.fleet.http(timeout=60) as http:
            while not self.stopping.is_set():
                ids = [f"bk-{batch:04d}-{n}" for n in range(5)]
                documents = [
                    {"task_id": i, "type": "simulated", "config": {"duration_seconds": 0.05}}
                    for i in ids
                ]
                answer = http.post("/api/v1/tasks", json=documents)
                assert answer.status_code == 201, answer.text
                with self.lock:
                    self.acknowledged += answer.json()["task_ids"]
                batch += 1
                self.stopping.wait(0.05)

    def snapshot_of_acknowledged(self) -> set[str]:
        with self.lock:
            return set(self.acknowledged)


@pytest.mark.timeout(300)
def test_a_backup_under_load_restores_every_task_acknowledged_before_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    scheduled = tmp_path / "scheduled"
    fleet.start_coordinator(
        CoordinatorOptions(
            heartbeat_interval=0.5,
            heartbeat_timeout=5,
            log_level="info",
            extra_args=(
                "--backup-dir",
                str(scheduled),
                "--backup-every",
                "1s",
                "--backup-keep",
                "2",
            ),
        )
    )
    for worker_id in WORKERS:
        fleet.start_worker(worker_id, slots=2, wait=False)
    fleet.wait_for_workers(WORKERS)
    load = Load(fleet)
    load.thread.start()
    try:
        fleet.wait_until(
            lambda: int(fleet.client.stats()["tasks"]["completed"]) >= 20, 60, "some completed"
        )
        before = load.snapshot_of_acknowledged()
        backup = tmp_path / "backup.duckdb"
        taken = run_cli(fleet, "backup", "--to", str(backup), "--json")
        assert taken.returncode == 0, taken.stderr
        # Work goes on during and after the backup.
        time.sleep(1.0)
        after = load.snapshot_of_acknowledged()
    finally:
        load.stopping.set()
        load.thread.join(60)
    assert len(after) > len(before), "no task was acknowledged during or after the backup"
    # Scheduled backups ran meanwhile, and only the newest two are kept.
    log = fleet.log_paths["coordinator"]
    fleet.wait_until(
        lambda: log.read_text().count("backup_schedule backup ") >= 3, 30, "3 scheduled backups"
    )
    fleet.stop_all()
    kept = scheduled_backups(scheduled)
    assert len(kept) == 2
    assert restore_snapshot(kept[-1], tmp_path / "scheduled.duckdb").rows["distributed_tasks"]
    restored = tmp_path / "restored.duckdb"
    done = run_cli(fleet, "restore", str(backup), "--db", str(restored))
    assert done.returncode == 0, done.stderr
    assert "checks passed" in done.stdout
    again = run_cli(fleet, "restore", str(backup), "--db", str(restored))
    assert again.returncode != 0
    assert "--force" in again.stderr

    fleet.db = restored
    fleet.start_coordinator()
    known: set[str] = set()
    offset = 0
    while True:
        page = fleet.client.list_tasks(limit=1000, offset=offset)
        known |= {t["task_id"] for t in page["tasks"]}
        offset += len(page["tasks"])
        if not page["tasks"] or offset >= page["total"]:
            break
    missing = before - known
    assert not missing, f"{len(missing)} acknowledged tasks missing, e.g. {sorted(missing)[:5]}"
    # And nothing that was never acknowledged (the load was joined: every request answered).
    assert known <= load.snapshot_of_acknowledged()
