"""The token, audit and revocation methods of :class:`~testfleet.store.store.Store`.

Callers: the coordinator's auth layer (``coordinator/auth.py``), the admin,
revocation and enrolment routes, and ``testfleet tokens create --db``, through
the store contract's ``SecurityStore``. The SQL is in ``security_queries.py``;
this mixin gives each operation its transaction.

Why these writes do not go through the coordinator's loop: they touch only
api_tokens, audit_events and worker_revocations, which the loop's batches
never write (a revoke also tells the loop, which closes the worker's
socket, after this write). Each is one small transaction on the store's
one writer cursor under the same lock as the loop's commits, so there is
still one writer at a time (no DuckDB write conflict can fail the loop's
commit), and the caller (an API route, or ``tokens create --db``) awaits
it before answering: durable before acknowledged. A token row or a
revocation and the audit event saying who made it are one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import duckdb

from testfleet.security.audit import AuditEvent
from testfleet.security.enrolment import TokenConsumption
from testfleet.security.tokens import Role, TokenRecord
from testfleet.security.worker_revocation import WorkerRevocation
from testfleet.store import security_queries

T = TypeVar("T")


class StoreTransactions(Protocol):
    """What the store's table mixins (this one, ``alert_queries.AlertTables``) need of
    the store they are mixed into: a write in a transaction of its own under the
    write lock, and a read on a fresh cursor."""

    def _security_write(
        self, operation: str, write: Callable[[duckdb.DuckDBPyConnection], T]
    ) -> T: ...

    def _read(self, operation: str, query: Callable[[duckdb.DuckDBPyConnection], T]) -> T: ...


class SecurityTables:
    """Tokens, the audit trail and worker revocations (see the module docstring)."""

    def add_token(
        self: StoreTransactions, token: TokenRecord, audit: Sequence[AuditEvent] = ()
    ) -> None:
        """Store a new token (its hash, never its secret) with its audit events."""

        def write(cursor: duckdb.DuckDBPyConnection) -> None:
            security_queries.insert_token(cursor, token)
            security_queries.insert_audit(cursor, list(audit))

        self._security_write("store a token", write)

    def revoke_token(
        self: StoreTransactions, token_id: str, now: float, audit: Sequence[AuditEvent] = ()
    ) -> bool:
        """Revoke ``token_id`` from ``now`` on (a second revoke keeps the first time);
        whether the token exists. The audit events are written only if it does."""

        def write(cursor: duckdb.DuckDBPyConnection) -> bool:
            found = security_queries.revoke_token(cursor, token_id, now)
            if found:
                security_queries.insert_audit(cursor, list(audit))
            return found

        return self._security_write("revoke a token", write)

    def consume_token(
        self: StoreTransactions,
        token_id: str,
        role: Role,
        now: float,
        audit: Sequence[AuditEvent] = (),
    ) -> TokenConsumption:
        """Use the one-time ``role`` token ``token_id`` at ``now`` (an enrolment token):
        check that it is usable and mark it revoked in one transaction, under the
        write lock, so two concurrent uses cannot both succeed. The audit events
        (what the use did) are written with it, only if it was consumed."""

        def write(cursor: duckdb.DuckDBPyConnection) -> TokenConsumption:
            verdict = security_queries.consume_token(cursor, token_id, role, now)
            if verdict is TokenConsumption.CONSUMED:
                security_queries.insert_audit(cursor, list(audit))
            return verdict

        return self._security_write("use a one-time token", write)

    def record_audit(self: StoreTransactions, events: Sequence[AuditEvent]) -> None:
        """Append ``events`` to the audit trail in one transaction."""
        if events:
            self._security_write(
                "record audit events", lambda c: security_queries.insert_audit(c, list(events))
            )

    def revoke_worker(
        self: StoreTransactions, revocation: WorkerRevocation, audit: Sequence[AuditEvent] = ()
    ) -> list[str]:
        """Record ``revocation``, revoke every worker and enrol token named by its
        worker id, and append ``audit``, in one transaction; the revoked tokens' ids."""

        def write(cursor: duckdb.DuckDBPyConnection) -> list[str]:
            revoked = security_queries.insert_revocation(cursor, revocation)
            security_queries.insert_audit(cursor, list(audit))
            return revoked

        return self._security_write("revoke a worker", write)

    def worker_revocations(self: StoreTransactions) -> dict[str, float]:
        """The latest revocation time of each revoked worker id (loaded at start-up)."""
        return self._read("read worker revocations", security_queries.latest_revocations)

    def get_token(self: StoreTransactions, token_id: str) -> TokenRecord | None:
        """The token ``token_id`` (revoked or expired ones too), or None."""
        return self._read(
            "read a token", lambda cursor: security_queries.get_token(cursor, token_id)
        )

    def list_tokens(self: StoreTransactions) -> list[TokenRecord]:
        """Every token ever created, oldest first."""
        return self._read("list tokens", security_queries.list_tokens)

    def audit_events(
        self: StoreTransactions,
        *,
        since: float | None = None,
        actor: str | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        """The newest ``limit`` audit events at or after ``since`` by ``actor``, oldest first."""
        return self._read(
            "read the audit trail",
            lambda cursor: security_queries.list_audit(
                cursor, since=since, actor=actor, limit=limit
            ),
        )
