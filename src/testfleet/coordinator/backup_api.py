"""``POST /api/v1/admin/backup``: a consistent snapshot of the database, streamed to the admin.

Callers: ``testfleet backup --to FILE`` (``cli/backup.py``), with an admin
token. The snapshot is taken inside the coordinator, which holds the file
(copying it from outside would miss what is still in DuckDB's WAL), by
:meth:`Store.snapshot <testfleet.store.Store.snapshot>` in a thread: a reader's
copy that never holds the loop's writer (``store/backup.py``). It is written
into the store's snapshot directory under a name the coordinator chooses, sent,
and deleted: the client names no server-side path, so there is none to
validate or confine. An encrypted database's snapshot is encrypted under the
same key; restoring it needs that key.

Each backup is audited (``backup_taken``: the admin token, its address, the
task count), as a refused one is.

One backup at a time: a second request while one is being taken is refused
(409), so two admins cannot fill the disk with copies at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from testfleet.coordinator.api_errors import (
    FORBIDDEN,
    STORAGE_ERROR,
    UNAUTHENTICATED,
    ApiRefusal,
    refusals,
)
from testfleet.coordinator.api_models import ErrorCode
from testfleet.coordinator.auth import AdminToken, Auth
from testfleet.security.audit import AuditKind, AuditOutcome
from testfleet.store.backup import SnapshotReport

BACKUP_PATH = "/api/v1/admin/backup"
DUCKDB_MEDIA_TYPE = "application/vnd.duckdb"
BACKUP_IN_PROGRESS = ApiRefusal(
    409,
    ErrorCode.BACKUP_IN_PROGRESS,
    "Another backup is being taken (one at a time); retry when it has finished.",
)


class Snapshots(Protocol):
    """What the route needs of the store (:class:`testfleet.store.Store` has it)."""

    def snapshot(self, name: str) -> SnapshotReport: ...


def snapshot_headers(report: SnapshotReport) -> dict[str, str]:
    """What the answer says about the file beside its bytes (the CLI prints them)."""
    return {
        "X-Testfleet-Schema-Version": str(report.schema_version),
        "X-Testfleet-Tasks": str(report.rows.get("distributed_tasks", 0)),
        "X-Testfleet-Snapshot-Seconds": f"{report.seconds:.3f}",
    }


def build_backup_router(store: Snapshots, encrypted: bool) -> APIRouter:
    """The backup route over ``store`` (built by the app factory). ``encrypted``:
    the database is, and so is every snapshot (said in a header)."""
    router = APIRouter(responses=refusals(UNAUTHENTICATED, FORBIDDEN))
    busy = asyncio.Lock()

    @router.post(
        BACKUP_PATH,
        summary="A consistent snapshot of the database, as one DuckDB file",
        response_class=FileResponse,
        responses={
            200: {
                "description": "The snapshot: a DuckDB file holding every commit made "
                "before the request, encrypted under the database's key when the database "
                "is (header X-Testfleet-Encrypted). Restore it with `testfleet restore`.",
                "content": {DUCKDB_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            },
            **refusals(BACKUP_IN_PROGRESS, STORAGE_ERROR),
        },
    )
    async def take_backup(principal: AdminToken, request: Request) -> Any:
        # Audited as other admin actions are: who took a copy of the whole database.
        auth: Auth = request.app.state.auth
        if busy.locked():
            await auth.record(
                principal,
                AuditKind.BACKUP_TAKEN,
                {"reason": "another backup is being taken"},
                AuditOutcome.REFUSED,
            )
            return BACKUP_IN_PROGRESS.response(
                "another backup is being taken; retry when it has finished"
            )
        async with busy:
            name = f".download-{uuid.uuid4().hex}.duckdb"
            report = await asyncio.to_thread(store.snapshot, name)
        await auth.record(
            principal,
            AuditKind.BACKUP_TAKEN,
            {
                "tasks": report.rows.get("distributed_tasks", 0),
                "schema_version": report.schema_version,
                "encrypted": encrypted,
            },
        )
        return FileResponse(
            report.path,
            media_type=DUCKDB_MEDIA_TYPE,
            filename="testfleet-backup.duckdb",
            headers=snapshot_headers(report)
            | {"X-Testfleet-Encrypted": "true" if encrypted else "false"},
            background=BackgroundTask(_remove, report.path),
        )

    return router


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
