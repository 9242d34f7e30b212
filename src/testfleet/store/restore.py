"""Restore a backup: check a snapshot and write it where a coordinator can open it.

Callers: ``testfleet restore FILE --db NEW`` (``cli/backup.py``). The snapshot
itself is never opened for writing (opening a store may apply migrations): it
is copied beside ``NEW`` first, that copy is opened as a store (which refuses a
schema newer than this code and migrates an older one), counted and checked
(``backup.check_snapshot``), closed (a checkpoint: one file, no WAL) and only
then renamed to ``NEW``, so ``NEW`` is either a checked database or absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from testfleet.store.backup import SnapshotReport, remove_database_files
from testfleet.store.encryption import DatabaseKey
from testfleet.store.errors import StoreError
from testfleet.store.store import Store


def restore_snapshot(
    snapshot: Path,
    target: Path,
    *,
    key: DatabaseKey | None = None,
    force: bool = False,
) -> SnapshotReport:
    """Check ``snapshot`` and write it to ``target``; what it holds.

    ``key``: the snapshot's key (a backup of an encrypted database is
    encrypted under the same key; the restored file stays so). Refuses, with
    the fix in the message: a missing snapshot, ``target`` existing without
    ``force``, ``target`` the snapshot itself, a directory that does not exist,
    and a snapshot that does not open or fails a check (``target`` untouched).
    """
    if not snapshot.is_file():
        raise StoreError(
            f"no snapshot at {str(snapshot)!r}: give the file `testfleet backup` wrote"
        )
    if target.exists() and target.resolve() == snapshot.resolve():
        raise StoreError("--db names the snapshot itself; give a new file to restore into")
    if target.exists() and not force:
        raise StoreError(
            f"{str(target)!r} exists; give a new --db, or add --force to replace it "
            "(stop any coordinator that has it open first)"
        )
    if not target.parent.is_dir():
        raise StoreError(f"the directory of --db {str(target)!r} does not exist; create it first")
    staging = target.with_name(f".{target.name}.restoring")
    remove_database_files(staging)
    try:
        shutil.copyfile(snapshot, staging)
        with Store(staging, encryption_key=key) as store:
            report = store.check_snapshot()
        if force:
            remove_database_files(target)
        os.replace(staging, target)
    except OSError as error:
        raise StoreError(
            f"could not restore {str(snapshot)!r} to {str(target)!r}: {error}"
        ) from error
    finally:
        remove_database_files(staging)
    return SnapshotReport(
        path=target,
        schema_version=report.schema_version,
        rows=report.rows,
        bytes=target.stat().st_size,
        seconds=report.seconds,
    )
