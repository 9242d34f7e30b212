"""The lease on a real PostgreSQL: the advisory lock, the epoch, renewal, termination.

Two :class:`PostgresLease` objects in one process stand for two coordinators
(each has its own connection, so its own session and lock). Runs on the
suite's private cluster (``pg_dsn``: a fresh database per test).
"""

from __future__ import annotations

import pytest

from testfleet.coordinator.leadership import Identity, LeaseLost, PostgresLease

A = Identity("host:1:aa", "https://a:8700")
B = Identity("host:2:bb", "https://b:8700")


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    """A fresh database whose schema (the lease row included) the store made."""
    return pg_dsn


async def test_one_lease_holds_the_lock_and_bumps_the_epoch(dsn: str) -> None:
    a, b = PostgresLease(dsn), PostgresLease(dsn)
    try:
        assert await a.try_lock()
        assert not await b.try_lock()
        assert await a.take_over(A, "{}") == 1
        row = await b.read()
        assert (row.epoch, row.leader_id, row.leader_url) == (1, A.instance_id, A.url)
        assert row.renewed_age is not None
        assert row.renewed_age < 5
        assert await a.renew(1)
        assert not await a.renew(0)  # another epoch: not ours
        # A releasing (its process ending) frees the lock for B: epoch 2.
        await a.release()
        assert await b.try_lock()
        assert await b.take_over(B, "{}") == 2
        assert not await a.renew(1)  # the old leader is told, on a new connection
    finally:
        await a.release()
        await b.release()


async def test_terminating_a_hung_leaders_backend_frees_its_lock(dsn: str) -> None:
    a, b = PostgresLease(dsn), PostgresLease(dsn)
    try:
        assert await a.try_lock()
        await a.take_over(A, "{}")
        pid = (await b.read()).backend_pid
        assert pid is not None
        await b.terminate(pid)
        # The backend ends asynchronously; the lock is free once it has.
        for _ in range(200):
            if await b.try_lock():
                break
        else:
            pytest.fail("the terminated leader's lock was never released")
        assert await b.take_over(B, "{}") == 2
        with pytest.raises(LeaseLost):
            await a.renew(1)  # its connection was ended
    finally:
        await a.release()
        await b.release()


async def test_an_unreachable_server_is_a_lease_lost_without_the_password(dsn: str) -> None:
    lease = PostgresLease(
        "postgresql://someone:s3cret@127.0.0.1:1/db",
        timeout_seconds=1,
        scrub=lambda text: text.replace("s3cret", "***"),
    )
    with pytest.raises(LeaseLost) as lost:
        await lease.try_lock()
    assert "s3cret" not in str(lost.value)


async def test_a_takeover_ends_a_paused_leaders_commit_that_holds_the_lease_row(
    dsn: str,
) -> None:
    """A leader stopped mid-commit (SIGSTOP, a VM paused) holds the lease row
    ``FOR SHARE`` from its fencing check until it resumes. The standby that
    took its lock must end that transaction, or its ``UPDATE`` would wait
    behind it for as long as the old leader stays paused."""
    import psycopg

    a = PostgresLease(dsn, timeout_seconds=2)
    b = PostgresLease(dsn, timeout_seconds=2)
    paused_commit = await psycopg.AsyncConnection.connect(dsn)
    try:
        assert await a.try_lock()
        await a.take_over(A, "{}")
        # The old leader's writer, mid-commit: the fencing check's share lock held.
        await paused_commit.execute("SELECT epoch FROM coordinator_lease WHERE id = 1 FOR SHARE")
        await a.release()
        assert await b.try_lock()
        assert await b.take_over(B, "{}") == 2
        # The paused commit was ended, not left to write under epoch 1 later.
        with pytest.raises(psycopg.OperationalError):
            await paused_commit.execute("SELECT 1")
    finally:
        await a.release()
        await b.release()
        await paused_commit.close()


async def test_a_takeover_leaves_other_connections_alone(dsn: str) -> None:
    """Only transactions holding the lease row are ended: a reader of the
    lease (a standby, a dashboard query) keeps its connection."""
    import psycopg

    b = PostgresLease(dsn, timeout_seconds=2)
    reader = await psycopg.AsyncConnection.connect(dsn)
    try:
        await reader.execute("SELECT epoch FROM coordinator_lease WHERE id = 1")
        assert await b.try_lock()
        assert await b.take_over(B, "{}") == 1
        cursor = await reader.execute("SELECT 1")
        assert await cursor.fetchone() == (1,)
    finally:
        await b.release()
        await reader.close()
