"""The lease decisions and their runner, on a fake lease and a fake clock.

The pure functions (``standby_move``, ``leader_move``, the settings check)
are tested directly; :class:`Leadership` runs over :class:`FakeLease` (what a
PostgreSQL lease row and advisory lock would say) with an autojumping
``FakeClock``, so a 10-second lease takes no wall time.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from testfleet.coordinator.leadership import (
    Identity,
    LeaderMove,
    Leadership,
    LeaseLost,
    LeaseRow,
    SettingsMismatch,
    StandbyMove,
    leader_move,
    settings_differences,
    settings_digest,
    standby_move,
)
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.testing import FakeClock

LEASE = 10.0
ME = Identity("host:1:aa", "https://me:8700")


def test_a_standby_takes_over_when_it_gets_the_lock() -> None:
    assert standby_move(True, LeaseRow(epoch=3), LEASE) is StandbyMove.TAKE_OVER


def test_a_standby_waits_while_the_leader_renews() -> None:
    row = LeaseRow(epoch=3, backend_pid=42, renewed_age=LEASE - 0.1)
    assert standby_move(False, row, LEASE) is StandbyMove.WAIT


def test_a_standby_ends_the_lease_connection_of_a_leader_silent_past_its_lease() -> None:
    row = LeaseRow(epoch=3, backend_pid=42, renewed_age=LEASE + 0.1)
    assert standby_move(False, row, LEASE) is StandbyMove.TERMINATE_HOLDER


def test_a_standby_without_a_known_holder_only_waits() -> None:
    row = LeaseRow(epoch=0, renewed_age=None)
    assert standby_move(False, row, LEASE) is StandbyMove.WAIT


@pytest.mark.parametrize(
    ("age", "move"),
    [
        (0.0, LeaderMove.WAIT),
        (LEASE / 3 - 0.01, LeaderMove.WAIT),
        (LEASE / 3 + 0.01, LeaderMove.RENEW),
        (LEASE - 0.01, LeaderMove.RENEW),
        (LEASE, LeaderMove.STEP_DOWN),
    ],
)
def test_a_leader_renews_every_third_of_a_lease_and_steps_down_after_one(
    age: float, move: LeaderMove
) -> None:
    assert leader_move(100.0 + age, 100.0, LEASE) is move


def test_settings_that_differ_are_named_with_both_values() -> None:
    leader = settings_digest(CoordinatorSettings(max_lost_attempts=3))
    mine = settings_digest(CoordinatorSettings(max_lost_attempts=5, heartbeat_timeout_seconds=20))
    problem = settings_differences(mine, leader)
    assert problem is not None
    assert "max_lost_attempts (this coordinator: 5, the leader: 3)" in problem
    assert "heartbeat_timeout_seconds (this coordinator: 20, the leader: 15.0)" in problem
    assert "aging_seconds" not in problem


def test_settings_that_are_not_shared_may_differ() -> None:
    one = settings_digest(CoordinatorSettings(rate_limit_per_second=5, public_url="https://a"))
    other = settings_digest(CoordinatorSettings(rate_limit_per_second=50))
    assert settings_differences(one, other) is None


def test_a_digest_this_version_cannot_read_differs() -> None:
    mine = settings_digest(CoordinatorSettings())
    problem = settings_differences(mine, "sha256:abc")
    assert problem is not None
    assert "same version" in problem


@dataclasses.dataclass
class FakeLease:
    """The lease as PostgreSQL would keep it: ``holder`` holds the lock."""

    clock: FakeClock
    row: LeaseRow = dataclasses.field(default_factory=lambda: LeaseRow(epoch=0))
    holder: str | None = None
    renewed_at: float | None = None
    me: str = "me"
    terminated: list[int] = dataclasses.field(default_factory=list)
    renew_hangs: bool = False
    renew_fails: bool = False
    released: int = 0

    async def try_lock(self) -> bool:
        if self.holder is None:
            self.holder = self.me
        return self.holder == self.me

    async def read(self) -> LeaseRow:
        age = None if self.renewed_at is None else self.clock.now() - self.renewed_at
        return dataclasses.replace(self.row, renewed_age=age)

    async def terminate(self, backend_pid: int) -> None:
        self.terminated.append(backend_pid)
        self.holder = None

    async def take_over(self, identity: Identity, digest: str) -> int:
        self.row = LeaseRow(self.row.epoch + 1, identity.instance_id, identity.url, 7, 0.0, digest)
        self.renewed_at = self.clock.now()
        return self.row.epoch

    async def renew(self, epoch: int) -> bool:
        if self.renew_hangs:
            await asyncio.Event().wait()
        if self.renew_fails:
            raise LeaseLost("terminating connection due to administrator command")
        if epoch != self.row.epoch:
            return False
        self.renewed_at = self.clock.now()
        return True

    async def release(self) -> None:
        self.released += 1
        if self.holder == self.me:
            self.holder = None


def leadership(lease: FakeLease, settings: CoordinatorSettings | None = None) -> Leadership:
    return Leadership(
        lease, lease.clock, ME, settings or CoordinatorSettings(), lease_seconds=LEASE
    )


async def test_a_lone_coordinator_takes_the_lease_at_epoch_one() -> None:
    clock = FakeClock()
    lease = FakeLease(clock)
    runner = leadership(lease)
    assert await runner.campaign() == 1
    assert runner.known.url == ME.url
    assert lease.row.settings_digest == runner.digest


async def test_a_standby_waits_for_a_live_leader_then_ends_a_silent_ones_connection() -> None:
    clock = FakeClock()
    digest = settings_digest(CoordinatorSettings())
    lease = FakeLease(
        clock,
        LeaseRow(4, "other", "https://other:8700", 99, None, digest),
        holder="other",
        renewed_at=clock.now(),
    )
    runner = leadership(lease)
    async with clock.autojump():
        won = asyncio.create_task(runner.campaign())
        await clock.sleep(5)
        assert not won.done()
        assert runner.known.url == "https://other:8700"
        assert runner.known.epoch == 4
        # The leader renews no more: a lease later its backend is ended, the
        # lock freed, and the next poll takes it.
        assert await won == 5
    assert lease.terminated == [99]
    assert clock.now() - lease.renewed_at <= 1  # type: ignore[operator]


async def test_a_standby_whose_settings_differ_from_a_live_leaders_refuses() -> None:
    clock = FakeClock()
    theirs = settings_digest(CoordinatorSettings(max_lost_attempts=9))
    lease = FakeLease(
        clock,
        LeaseRow(2, "other", "https://other", 99, None, theirs),
        holder="other",
        renewed_at=clock.now(),
    )
    with pytest.raises(SettingsMismatch, match="max_lost_attempts"):
        await leadership(lease).campaign()
    with pytest.raises(SettingsMismatch, match="max_lost_attempts"):
        await leadership(lease).check_settings()


async def test_a_dead_leaders_settings_do_not_stop_a_start() -> None:
    clock = FakeClock()
    theirs = settings_digest(CoordinatorSettings(max_lost_attempts=9))
    lease = FakeLease(clock, LeaseRow(2, "old", "https://old", 99, None, theirs))
    lease.renewed_at = clock.advance(0) - 3 * LEASE
    await leadership(lease).check_settings()  # no live leader: may start


async def test_a_standby_retries_while_postgresql_is_unreachable() -> None:
    clock = FakeClock()
    lease = FakeLease(clock)
    calls = 0
    real_try_lock = lease.try_lock

    async def flaky() -> bool:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise LeaseLost("connection refused")
        return await real_try_lock()

    lease.try_lock = flaky  # type: ignore[method-assign]
    async with clock.autojump():
        assert await leadership(lease).campaign() == 1
    assert calls == 3
    assert lease.released == 2


async def test_a_leader_keeps_the_lease_by_renewing_it() -> None:
    clock = FakeClock()
    lease = FakeLease(clock)
    runner = leadership(lease)
    await runner.campaign()
    async with clock.autojump():
        holding = asyncio.create_task(runner.hold(lambda: None))
        await clock.sleep(10 * LEASE)
        assert not holding.done()
        assert clock.now() - lease.renewed_at < LEASE / 2  # type: ignore[operator]
        holding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holding
    assert lease.holder is None  # released when it stopped


async def test_a_leader_that_cannot_renew_steps_down_within_a_lease_by_its_own_clock() -> None:
    clock = FakeClock()
    lease = FakeLease(clock)
    runner = leadership(lease)
    await runner.campaign()
    lease.renew_hangs = True  # PostgreSQL stopped answering
    started = clock.now()
    async with clock.autojump():
        reason = await runner.hold(lambda: None)
    assert "could not renew the lease" in reason
    # Stepped down no later than a lease after its last renewal, at the latest.
    assert clock.now() - started <= LEASE + 0.01
    assert lease.released == 1


async def test_a_leader_steps_down_at_once_when_its_lease_connection_fails() -> None:
    clock = FakeClock()
    lease = FakeLease(clock)
    runner = leadership(lease)
    await runner.campaign()
    lease.renew_fails = True
    async with clock.autojump():
        reason = await runner.hold(lambda: None)
    assert "lease connection failed" in reason
    assert clock.now() - lease.renewed_at <= LEASE / 3 + 1  # type: ignore[operator]


async def test_a_leader_steps_down_when_another_epoch_leads() -> None:
    clock = FakeClock()
    lease = FakeLease(clock)
    runner = leadership(lease)
    await runner.campaign()
    lease.row = dataclasses.replace(lease.row, epoch=lease.row.epoch + 1)
    async with clock.autojump():
        assert await runner.hold(lambda: None) == "another coordinator took the lease"


async def test_a_leader_whose_loop_stopped_steps_down() -> None:
    clock = FakeClock()
    lease = FakeLease(clock)
    runner = leadership(lease)
    await runner.campaign()
    fenced = RuntimeError("this coordinator's leadership (epoch 1) has ended; epoch 2 leads now")
    async with clock.autojump():
        reason = await runner.hold(lambda: fenced)
    assert "epoch 2 leads now" in reason
    assert lease.holder is None
