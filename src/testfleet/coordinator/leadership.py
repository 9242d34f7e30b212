"""Which coordinator leads: the lease in PostgreSQL, and when to take it or give it up.

Callers: :mod:`testfleet.coordinator.roles`, which runs a coordinator started
with ``--store postgresql://…`` as a standby until :meth:`Leadership.campaign`
returns an epoch, then as the leader while :meth:`Leadership.hold` keeps the
lease, and as a standby again when it returns (the protocol is
in ARCHITECTURE.md, "Failover", and the README, "Failover on PostgreSQL").

We do not write our own consensus: PostgreSQL decides. The leader holds a
session-level advisory lock (:data:`LEASE_LOCK_KEY`) on a dedicated autocommit
connection, and the ``coordinator_lease`` row says who it is, where it
serves, the epoch (one more at every change of leader) and when it last
renewed (server time). Fencing is the store's: every commit of a leader checks
the epoch inside its transaction (``StoreFenced``), so a leader that was
paused past its lease can never write again.

The decisions are pure functions of what was observed (:func:`standby_move`,
:func:`leader_move`), unit-tested without a database; :class:`Leadership`
applies them with time from an injected :class:`~testfleet.clock.Clock` (a
monotonic one in production, ``FakeClock`` in tests) over a
:class:`LeaseBackend` (:class:`PostgresLease` in production, a fake in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from testfleet.clock import Clock, wait_within
from testfleet.coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)

#: The advisory lock the leader holds (``pg_try_advisory_lock``): "testfleet"
#: in ASCII, read as a number, so that other applications on the database are
#: unlikely to pick it.
LEASE_LOCK_KEY = 0x74657374666C656574 & 0x7FFF_FFFF_FFFF_FFFF
#: Default lease: a leader that cannot renew for this long stops serving, and a
#: standby takes over from a leader silent this long (server time).
DEFAULT_LEASE_SECONDS = 10.0
#: How often a standby looks at the lease.
POLL_SECONDS = 0.5

#: The settings every coordinator on one database must share: they change
#: scheduling or what a result means, so a failover must not change them. The
#: rest (ports, TLS, rate limits, alerts) may differ per coordinator.
SHARED_SETTINGS = (
    "heartbeat_interval_seconds",
    "heartbeat_timeout_seconds",
    "disconnect_grace_seconds",
    "timeout_grace_seconds",
    "max_lost_attempts",
    "aging_seconds",
    "max_tasks_per_submit",
    "max_queued_per_submitter",
)


class CoordinatorRole(enum.StrEnum):
    """What this coordinator process is serving now."""

    LEADER = "leader"
    STANDBY = "standby"


class StandbyMove(enum.Enum):
    """What a standby does after one look at the lease (:func:`standby_move`)."""

    WAIT = "wait"
    #: It holds the lock now: bump the epoch and lead.
    TAKE_OVER = "take_over"
    #: The leader has not renewed for a lease: end its lease connection, so
    #: that its lock is released (a hung process keeps its socket open).
    TERMINATE_HOLDER = "terminate_holder"


class LeaderMove(enum.Enum):
    """What a leader does at a point in time (:func:`leader_move`)."""

    WAIT = "wait"
    RENEW = "renew"
    #: Its last renewal is a lease old: a standby may lead now, so stop serving.
    STEP_DOWN = "step_down"


class SettingsMismatch(Exception):
    """This coordinator's shared settings differ from the leader's; the message
    names each differing setting with both values."""


class LeaseLost(Exception):
    """The lease connection failed or the row names another epoch: not leading."""


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """One reading of ``coordinator_lease`` (``renewed_age``: server ``now() -
    renewed_at`` in seconds, None if never renewed)."""

    epoch: int
    leader_id: str | None = None
    leader_url: str | None = None
    backend_pid: int | None = None
    renewed_age: float | None = None
    settings_digest: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this coordinator is: ``host:pid:random`` and its advertised URL."""

    instance_id: str
    url: str

    @classmethod
    def of_this_process(cls, url: str) -> Identity:
        return cls(f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}", url)


def settings_digest(settings: CoordinatorSettings) -> str:
    """The shared settings as canonical JSON (stored in ``settings_digest``).

    Plain JSON rather than a hash, so that a coordinator that differs can be
    told which setting differs and what the leader uses."""
    values = {name: getattr(settings, name) for name in SHARED_SETTINGS}
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def settings_differences(mine: str, theirs: str) -> str | None:
    """One line naming the shared settings that differ (None when none do).

    A digest this code cannot read (another version's) counts as differing."""
    try:
        leader: Mapping[str, Any] = json.loads(theirs)
        own: Mapping[str, Any] = json.loads(mine)
    except ValueError:
        leader, own = {}, {}
    if not isinstance(leader, dict) or not leader:
        return (
            "the leading coordinator's shared settings are in a form this version "
            "cannot read; run every coordinator on one database at the same version"
        )
    names = sorted(set(leader) | set(own))
    differing = [
        f"{name} (this coordinator: {own.get(name)!r}, the leader: {leader.get(name)!r})"
        for name in names
        if leader.get(name) != own.get(name)
    ]
    if not differing:
        return None
    return (
        "every coordinator on one database must share these settings, and these differ: "
        + "; ".join(differing)
        + ". Start this coordinator with the leader's values (or stop every coordinator "
        "and start them all with the new ones)."
    )


def standby_move(got_lock: bool, row: LeaseRow, lease_seconds: float) -> StandbyMove:
    """What a standby that just tried the lock does next.

    The lock free (``got_lock``): take over. Held, but the row says the
    leader has not renewed for longer than a lease by the server's clock: the
    holder is hung or cut off, so terminate its lease connection (its lock is
    released when the backend ends; the next poll takes it). Otherwise wait.
    """
    if got_lock:
        return StandbyMove.TAKE_OVER
    stale = row.renewed_age is not None and row.renewed_age > lease_seconds
    if stale and row.backend_pid is not None:
        return StandbyMove.TERMINATE_HOLDER
    return StandbyMove.WAIT


def leader_move(now: float, renewed_at: float, lease_seconds: float) -> LeaderMove:
    """What a leader does at ``now`` (its own monotonic clock) whose last
    successful renewal was *sent* at ``renewed_at``.

    The renewal time is taken before the statement is sent, so the leader's
    deadline falls no later than the one the standbys see by server time:
    the leader stops serving before a standby may take over (a paused process
    cannot, and is fenced instead). It renews every third of a lease, so two
    renewals may fail before it steps down."""
    age = now - renewed_at
    if age >= lease_seconds:
        return LeaderMove.STEP_DOWN
    if age >= lease_seconds / 3:
        return LeaderMove.RENEW
    return LeaderMove.WAIT


class LeaseBackend(Protocol):
    """The I/O of the lease (:class:`PostgresLease`; a fake in unit tests).

    Any method may raise :class:`LeaseLost` (or ``OSError``) when the
    connection failed; the lock goes with the connection."""

    async def try_lock(self) -> bool:
        """``pg_try_advisory_lock``: True if this connection holds the lock now."""
        ...

    async def read(self) -> LeaseRow:
        """The lease row as it is now."""
        ...

    async def terminate(self, backend_pid: int) -> None:
        """``pg_terminate_backend`` of a hung leader's lease connection."""
        ...

    async def take_over(self, identity: Identity, digest: str) -> int:
        """Bump the epoch, name this coordinator, and return the new epoch.

        Called only while holding the lock, so it first ends any transaction
        of a previous leader that still holds the lease row (one stopped
        mid-commit), which would otherwise block the update indefinitely."""
        ...

    async def renew(self, epoch: int) -> bool:
        """Renew the lease of ``epoch``; False if another epoch leads now."""
        ...

    async def release(self) -> None:
        """Close the lease connection (releasing the lock); reconnect on next use."""
        ...


@dataclass(slots=True)
class LeaderInfo:
    """The leader as a standby last saw it: what the standby app answers with."""

    url: str | None = None
    epoch: int = 0


class Leadership:
    """Runs the lease protocol for one coordinator process (see the module docstring).

    Called by ``roles.run_roles``: :meth:`campaign` while standing by, then
    :meth:`hold` while leading. ``known`` is what the standby app reports."""

    def __init__(
        self,
        backend: LeaseBackend,
        clock: Clock,
        identity: Identity,
        settings: CoordinatorSettings,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.identity = identity
        self.digest = settings_digest(settings)
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.known = LeaderInfo()
        self.epoch: int | None = None

    async def campaign(self) -> int:
        """Stand by until this coordinator holds the lease; return its epoch.

        Raises :class:`SettingsMismatch` when a live leader's shared settings
        differ from ours (this coordinator must never lead with other
        settings). Connection failures are logged and retried at the poll
        interval: PostgreSQL may be restarting."""
        while True:
            try:
                epoch = await self._look_once()
            except (LeaseLost, OSError) as exc:
                log.warning("lease: cannot reach PostgreSQL, retrying: %s", exc)
                await self.backend.release()
                epoch = None
            if epoch is not None:
                self.epoch = epoch
                self.known = LeaderInfo(self.identity.url, epoch)
                return epoch
            await self.clock.sleep(self.poll_seconds)

    async def check_settings(self) -> None:
        """:class:`SettingsMismatch` if a live leader (renewed within a lease)
        has shared settings that differ from ours (called once at start-up, so
        that such a coordinator refuses to start at all)."""
        try:
            row = await self.backend.read()
        finally:
            await self.backend.release()
        self.known = LeaderInfo(row.leader_url, row.epoch)
        alive = row.renewed_age is not None and row.renewed_age <= self.lease_seconds
        if alive and row.settings_digest is not None:
            problem = settings_differences(self.digest, row.settings_digest)
            if problem is not None:
                raise SettingsMismatch(problem)

    async def _look_once(self) -> int | None:
        got_lock = await self.backend.try_lock()
        row = await self.backend.read()
        if not got_lock and row.settings_digest is not None:
            problem = settings_differences(self.digest, row.settings_digest)
            if problem is not None:
                raise SettingsMismatch(problem)
        self.known = LeaderInfo(row.leader_url, row.epoch)
        move = standby_move(got_lock, row, self.lease_seconds)
        if move is StandbyMove.TERMINATE_HOLDER and row.backend_pid is not None:
            log.warning(
                "lease: the leader %s (epoch %d) has not renewed for %.1f s; ending its "
                "lease connection",
                row.leader_id,
                row.epoch,
                row.renewed_age or 0.0,
            )
            await self.backend.terminate(row.backend_pid)
        if move is not StandbyMove.TAKE_OVER:
            return None
        return await self.backend.take_over(self.identity, self.digest)

    async def hold(self, failed: Callable[[], BaseException | None]) -> str:
        """Keep the lease while leading; return why leadership ended (for the log).

        Renews every third of a lease; steps down when a lease has passed by
        our own clock since the last renewal that succeeded, at once when the
        lease connection fails or the row names another epoch, and when
        ``failed()`` reports the leader's loop stopped (``StoreFenced`` after
        a takeover, or any store failure: a new campaign recovers from the
        store). The lock is released before returning."""
        assert self.epoch is not None, "hold() before campaign()"
        epoch = self.epoch
        renewed_at = self.clock.now()
        try:
            while True:
                failure = failed()
                if failure is not None:
                    return f"the loop stopped: {failure}"
                now = self.clock.now()
                move = leader_move(now, renewed_at, self.lease_seconds)
                if move is LeaderMove.STEP_DOWN:
                    return f"could not renew the lease for {now - renewed_at:.1f} s"
                if move is LeaderMove.RENEW:
                    sent = now
                    left = renewed_at + self.lease_seconds - now
                    try:
                        renewed = await wait_within(self.clock, self.backend.renew(epoch), left)
                    except TimeoutError:
                        continue  # leader_move steps down on the next turn
                    except (LeaseLost, OSError) as exc:
                        return f"the lease connection failed: {exc}"
                    if not renewed:
                        return "another coordinator took the lease"
                    renewed_at = sent
                await self.clock.sleep(min(self.poll_seconds, self.lease_seconds / 6))
        finally:
            self.epoch = None
            await self.backend.release()


class PostgresLease:
    """:class:`LeaseBackend` over one dedicated autocommit psycopg connection.

    Session-level advisory locks belong to the connection: it must go straight
    to PostgreSQL, never through a transaction-pooling proxy (PgBouncer in
    transaction mode would hand the lock's session to other clients).
    ``connect_timeout`` and a ``statement_timeout`` bound every call, so a
    PostgreSQL that does not answer reads as a failed call, not a hang."""

    def __init__(
        self,
        dsn: str,
        *,
        timeout_seconds: float = 5.0,
        scrub: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.dsn = dsn
        self.timeout_seconds = timeout_seconds
        #: Removes the DSN's password from any message (the store's ``PostgresDsn.scrub``).
        self.scrub = scrub
        self._connection: Any = None

    async def _conn(self) -> Any:
        # Imported here: psycopg is optional (testfleet[postgres]).
        import psycopg

        if self._connection is None or self._connection.closed:
            try:
                self._connection = await psycopg.AsyncConnection.connect(
                    self.dsn,
                    autocommit=True,
                    connect_timeout=max(1, int(self.timeout_seconds)),
                    options=f"-c statement_timeout={int(self.timeout_seconds * 1000)}",
                    application_name="testfleet-lease",
                )
            except psycopg.Error as exc:
                raise LeaseLost(self.scrub(_first_line(exc))) from None
        return self._connection

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        import psycopg

        connection = await self._conn()
        try:
            cursor = await connection.execute(sql, params)
            return await cursor.fetchone()
        except psycopg.Error as exc:
            await self.release()
            raise LeaseLost(self.scrub(_first_line(exc))) from None

    async def try_lock(self) -> bool:
        row = await self._fetch("SELECT pg_try_advisory_lock(%s)", (LEASE_LOCK_KEY,))
        return bool(row[0])

    async def read(self) -> LeaseRow:
        row = await self._fetch(
            "SELECT epoch, leader_id, leader_url, backend_pid,"
            " extract(epoch FROM now() - renewed_at)::float8, settings_digest"
            " FROM coordinator_lease WHERE id = 1"
        )
        if row is None:
            raise LeaseLost("the coordinator_lease row is missing (is the schema created?)")
        return LeaseRow(*row)

    async def terminate(self, backend_pid: int) -> None:
        await self._fetch("SELECT pg_terminate_backend(%s)", (backend_pid,))

    async def take_over(self, identity: Identity, digest: str) -> int:
        # A leader stopped mid-commit (SIGSTOP, a paused VM) still holds the
        # row FOR SHARE from its fencing check, and the UPDATE below would wait
        # behind it for as long as it stays stopped. This connection holds the
        # advisory lock, so whoever holds the row now has lost the lease: end
        # those transactions (each rolls back, unacknowledged). Only the
        # writer's fencing check takes a ROW SHARE lock on this table; plain
        # readers take ACCESS SHARE and are left alone.
        ended = await self._fetch(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_locks"
            " WHERE locktype = 'relation' AND relation = 'coordinator_lease'::regclass"
            " AND mode = 'RowShareLock' AND granted AND pid <> pg_backend_pid()"
        )
        if ended[0]:
            log.warning(
                "lease: ended %d transaction(s) of a previous leader still holding the "
                "lease row (stopped mid-commit)",
                ended[0],
            )
        row = await self._fetch(
            "UPDATE coordinator_lease SET epoch = epoch + 1, leader_id = %s, leader_url = %s,"
            " backend_pid = pg_backend_pid(), renewed_at = now(), settings_digest = %s"
            " WHERE id = 1 RETURNING epoch",
            (identity.instance_id, identity.url, digest),
        )
        return int(row[0])

    async def renew(self, epoch: int) -> bool:
        row = await self._fetch(
            "UPDATE coordinator_lease SET renewed_at = now() WHERE id = 1 AND epoch = %s"
            " RETURNING epoch",
            (epoch,),
        )
        return row is not None

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # Unlocked explicitly first: the server ends a closed session's
            # backend (and so frees its lock) a moment after the close, and a
            # standby should find the lock free at its very next look.
            with contextlib.suppress(Exception):
                unlock = connection.execute("SELECT pg_advisory_unlock_all()")
                await asyncio.wait_for(unlock, self.timeout_seconds)
            with contextlib.suppress(Exception):
                await connection.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "LEASE_LOCK_KEY",
    "CoordinatorRole",
    "Identity",
    "LeaderInfo",
    "LeaderMove",
    "Leadership",
    "LeaseBackend",
    "LeaseLost",
    "LeaseRow",
    "PostgresLease",
    "SettingsMismatch",
    "StandbyMove",
    "leader_move",
    "settings_differences",
    "settings_digest",
    "standby_move",
]
