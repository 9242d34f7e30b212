"""SQL for ``api_tokens``, ``audit_events`` (schema version 5) and
``worker_revocations`` (version 6).

Callers: :class:`~testfleet.store.store.Store`'s token and audit methods,
which run the writes under the store's one write lock (see there) and the
reads on a fresh cursor each. Times cross as integer epoch microseconds, as in
``rows.py``; the audit ``detail`` is a JSON object.
"""

from __future__ import annotations

from typing import Any

import duckdb
import orjson

from testfleet.security.audit import AuditEvent, AuditKind, AuditOutcome
from testfleet.security.enrolment import TokenConsumption
from testfleet.security.tokens import Role, TokenRecord
from testfleet.security.worker_revocation import WorkerRevocation
from testfleet.store.rows import from_micros, to_micros

_TOKEN_COLUMNS = (
    "token_id, name, role, secret_hash, epoch_us(created), epoch_us(expires), epoch_us(revoked)"
)
_AUDIT_COLUMNS = "seq, epoch_us(time), kind, outcome, actor, credential_id, remote, detail"


def insert_token(cursor: duckdb.DuckDBPyConnection, token: TokenRecord) -> None:
    cursor.execute(
        "INSERT INTO api_tokens VALUES (?, ?, ?, ?, make_timestamp(?), make_timestamp(?), "
        "make_timestamp(?))",
        [
            token.token_id,
            token.name,
            token.role.value,
            token.secret_hash,
            to_micros(token.created),
            to_micros(token.expires),
            to_micros(token.revoked),
        ],
    )


def revoke_token(cursor: duckdb.DuckDBPyConnection, token_id: str, now: float) -> bool:
    """Mark ``token_id`` revoked at ``now`` (the first revocation stands); whether it exists."""
    row = cursor.execute(
        "UPDATE api_tokens SET revoked = coalesce(revoked, make_timestamp(?)) "
        "WHERE token_id = ? RETURNING token_id",
        [to_micros(now), token_id],
    ).fetchone()
    return row is not None


def consume_token(
    cursor: duckdb.DuckDBPyConnection, token_id: str, role: Role, now: float
) -> TokenConsumption:
    """Use the one-time token ``token_id`` of ``role`` at ``now``: one UPDATE that
    marks it revoked only if it is still usable, so that of two callers only the
    first finds it (the caller holds the store's write lock, in a transaction);
    when nothing was updated, the row says why."""
    row = cursor.execute(
        "UPDATE api_tokens SET revoked = make_timestamp(?) "
        "WHERE token_id = ? AND role = ? AND revoked IS NULL "
        "AND (expires IS NULL OR expires > make_timestamp(?)) RETURNING token_id",
        [to_micros(now), token_id, role.value, to_micros(now)],
    ).fetchone()
    if row is not None:
        return TokenConsumption.CONSUMED
    token = get_token(cursor, token_id)
    if token is None or token.role is not role:
        return TokenConsumption.UNKNOWN
    if token.revoked is not None:
        return TokenConsumption.ALREADY_USED
    return TokenConsumption.EXPIRED


def _token(row: tuple[Any, ...]) -> TokenRecord:
    token_id, name, role, secret_hash, created, expires, revoked = row
    return TokenRecord(
        token_id=token_id,
        name=name,
        role=Role(role),
        secret_hash=secret_hash,
        created=from_micros(created) or 0.0,
        expires=from_micros(expires),
        revoked=from_micros(revoked),
    )


def get_token(cursor: duckdb.DuckDBPyConnection, token_id: str) -> TokenRecord | None:
    row = cursor.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_id = ?", [token_id]
    ).fetchone()
    return None if row is None else _token(row)


def list_tokens(cursor: duckdb.DuckDBPyConnection) -> list[TokenRecord]:
    rows = cursor.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created, token_id"
    ).fetchall()
    return [_token(row) for row in rows]


def insert_audit(cursor: duckdb.DuckDBPyConnection, events: list[AuditEvent]) -> None:
    for event in events:
        cursor.execute(
            "INSERT INTO audit_events (time, kind, outcome, actor, credential_id, remote, detail) "
            "VALUES (make_timestamp(?), ?, ?, ?, ?, ?, ?)",
            [
                to_micros(event.time),
                event.kind.value,
                event.outcome.value,
                event.actor,
                event.credential_id,
                event.remote,
                orjson.dumps(event.detail, default=str).decode(),
            ],
        )


def list_audit(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since: float | None = None,
    actor: str | None = None,
    limit: int = 1000,
) -> list[AuditEvent]:
    """The newest ``limit`` events at or after ``since`` by ``actor``, oldest first."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    where: list[str] = []
    params: list[object] = []
    if since is not None:
        where.append("time >= make_timestamp(?)")
        params.append(to_micros(since))
    if actor is not None:
        where.append("actor = ?")
        params.append(actor)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = cursor.execute(
        f"SELECT * FROM (SELECT {_AUDIT_COLUMNS} FROM audit_events {clause} "
        "ORDER BY seq DESC LIMIT ?) ORDER BY seq",
        [*params, limit],
    ).fetchall()
    return [
        AuditEvent(
            seq=seq,
            time=from_micros(time) or 0.0,
            kind=AuditKind(kind),
            outcome=AuditOutcome(outcome),
            actor=actor_,
            credential_id=credential_id,
            remote=remote,
            detail=orjson.loads(detail),
        )
        for seq, time, kind, outcome, actor_, credential_id, remote, detail in rows
    ]


def insert_revocation(cursor: duckdb.DuckDBPyConnection, revocation: WorkerRevocation) -> list[str]:
    """Record ``revocation`` and revoke every worker or enrol token named by its
    worker id (the first revocation of a token stands); the ids of those tokens."""
    cursor.execute(
        "INSERT INTO worker_revocations VALUES (?, make_timestamp(?), ?, ?)",
        [
            revocation.worker_id,
            to_micros(revocation.revoked_at),
            revocation.revoked_by,
            revocation.reason,
        ],
    )
    rows = cursor.execute(
        "UPDATE api_tokens SET revoked = coalesce(revoked, make_timestamp(?)) "
        "WHERE name = ? AND role IN (?, ?) RETURNING token_id",
        [
            to_micros(revocation.revoked_at),
            revocation.worker_id,
            Role.WORKER.value,
            Role.ENROL.value,
        ],
    ).fetchall()
    return sorted(row[0] for row in rows)


def latest_revocations(cursor: duckdb.DuckDBPyConnection) -> dict[str, float]:
    """The latest revocation time of every revoked worker id."""
    rows = cursor.execute(
        "SELECT worker_id, epoch_us(max(revoked_at)) FROM worker_revocations GROUP BY worker_id"
    ).fetchall()
    return {worker_id: from_micros(at) or 0.0 for worker_id, at in rows}
