"""Scheduled backups: a snapshot every ``--backup-every``, the newest ``--backup-keep`` kept.

Callers: the app's lifespan runs :meth:`BackupSchedule.run` beside the loop
when ``testfleet coordinator --backup-every`` is given. Each snapshot is taken
by ``take`` (the store's :meth:`~testfleet.store.Store.snapshot`, in a thread)
into the backup directory under a name made from the injected clock's time,
``testfleet-backup-20260101T120000Z.duckdb``: names sort in time order, so
pruning keeps the last ``keep`` by name and touches no other file. While a
new one is written there are ``keep + 1`` for a moment: the old one goes only
once the new one is whole. Time is
read from the clock handed in (``clock.py``), so a test drives a day of
backups with a fake clock. A snapshot that fails is logged and tried again at
the next interval; the loop is never stopped by it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testfleet.clock import Clock
from testfleet.store.backup import SnapshotReport, remove_database_files
from testfleet.store.errors import StoreError

log = logging.getLogger(__name__)

PREFIX = "testfleet-backup-"
#: Before a snapshot's file is whole it is named this and then the backup's name
#: (the app removes such leftovers at start-up).
PARTIAL = ".partial-"
SUFFIX = ".duckdb"
_NAME = re.compile(rf"^{re.escape(PREFIX)}\d{{8}}T\d{{6}}Z{re.escape(SUFFIX)}$")


def backup_name(epoch_seconds: float) -> str:
    """The file name of a backup taken at ``epoch_seconds`` (UTC, to the second)."""
    moment = datetime.datetime.fromtimestamp(epoch_seconds, datetime.UTC)
    return f"{PREFIX}{moment:%Y%m%dT%H%M%S}Z{SUFFIX}"


def scheduled_backups(directory: Path) -> list[Path]:
    """The scheduled backups in ``directory``, oldest first (other files are not ours)."""
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name) and p.is_file())


@dataclass(slots=True)
class BackupSchedule:
    """Takes a backup every ``every`` seconds into ``directory``, keeping the newest ``keep``."""

    take: Callable[[str], SnapshotReport]
    directory: Path
    every: float
    keep: int
    clock: Clock
    #: Runs the blocking snapshot off the event loop; tests pass one that runs it inline.
    offload: Callable[..., Awaitable[Any]] = field(default=asyncio.to_thread)
    #: Backups taken and failed since start (tests and the log read them).
    taken: int = 0
    failed: int = 0

    async def run(self) -> None:
        """Back up every ``every`` seconds until cancelled (the first after one interval:
        a coordinator that restarts often does not copy its file each time)."""
        while True:
            await self.clock.sleep(self.every)
            await self.backup_once()

    async def backup_once(self) -> SnapshotReport | None:
        """One backup and the pruning after it; None (logged) when the snapshot failed."""
        name = backup_name(self.clock.now())
        if (self.directory / name).exists():
            return None  # one this second already (an interval under a second)
        # Written under a name that is not a backup's, renamed once whole: a
        # snapshot cut short (a shutdown mid-copy) never passes for a backup.
        partial = f"{PARTIAL}{name}"
        try:
            report: SnapshotReport = await self.offload(self.take, partial)
            report.path.replace(self.directory / name)
        except (StoreError, OSError) as exc:
            self.failed += 1
            log.error(
                "scheduled backup %s failed, trying again in %.0f s: %s", name, self.every, exc
            )
            return None
        self.taken += 1
        report = dataclasses.replace(report, path=self.directory / name)
        log.info(
            "backup %s: %d tasks, %.1f MB in %.2f s",
            report.path,
            report.rows.get("distributed_tasks", 0),
            report.bytes / 1e6,
            report.seconds,
        )
        self.prune()
        return report

    def prune(self) -> list[Path]:
        """Delete all but the newest ``keep`` scheduled backups; the ones deleted."""
        backups = scheduled_backups(self.directory)
        old = backups[: max(0, len(backups) - self.keep)]
        for path in old:
            remove_database_files(path)
        return old
