"""The root of trust: an admin token written straight into the database file.

Callers: ``testfleet tokens create --db FILE`` (or ``--store DSN``) and ``LocalFleet`` (which makes
its admin token this way before it starts the coordinator). No API can make
the first token (no one could call it yet), so whoever can write the
coordinator's database file makes it; that person could change anything in
the file anyway. The coordinator must not be running: DuckDB lets one process
open the file, and the store's error then says to stop it.
"""

from __future__ import annotations

import time
from pathlib import Path

from testfleet.security.audit import AuditEvent, AuditKind, AuditOutcome
from testfleet.security.tokens import IssuedToken, Role, issue_token
from testfleet.store import open_store
from testfleet.store.encryption import DatabaseKey


def create_token_in_file(
    db_path: str | Path,
    name: str,
    role: Role,
    *,
    expires_in_seconds: float | None = None,
    now: float | None = None,
    encryption_key: DatabaseKey | None = None,
) -> IssuedToken:
    """Create a token in the database at ``db_path`` (created and migrated if new;
    a ``postgresql://`` DSN opens that PostgreSQL database instead)
    and record it in the audit trail as made with direct access to the file.

    ``encryption_key``: the file is (or is to be) encrypted with it, as the
    coordinator's ``--db-key-file`` opens it.

    Raises ``ValueError`` for a bad name or expiry and
    :class:`~testfleet.store.StoreError` when the file cannot be opened (a
    running coordinator holds it) or written.
    """
    moment = time.time() if now is None else now
    issued = issue_token(name, role, moment, expires_in_seconds=expires_in_seconds)
    record = issued.record
    event = AuditEvent(
        time=moment,
        kind=AuditKind.TOKEN_CREATED,
        outcome=AuditOutcome.ALLOWED,
        actor="database-file",
        detail={
            "token_id": record.token_id,
            "name": record.name,
            "role": record.role.value,
            "via": "tokens create --db",
        },
    )
    with open_store(db_path, encryption_key=encryption_key) as store:
        store.add_token(record, [event])
    return issued
