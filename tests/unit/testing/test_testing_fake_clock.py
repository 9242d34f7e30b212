"""FakeClock: sleepers wake when a test advances time, or when autojump finds the
loop idle; wait_within times out on the clock it is given."""

from __future__ import annotations

import asyncio

import pytest

from testfleet.clock import wait_within
from testfleet.testing import FakeClock


async def test_a_sleeper_wakes_only_when_time_is_advanced_past_its_deadline() -> None:
    clock = FakeClock(start=100.0)
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(clock.now())

    tasks = [asyncio.create_task(sleeper(s)) for s in (5.0, 1.0)]
    await asyncio.sleep(0)
    clock.advance(0.5)
    await asyncio.sleep(0)
    assert woke == []
    clock.advance(0.5)
    await asyncio.sleep(0)
    assert woke == [101.0]
    clock.advance(10.0)
    await asyncio.gather(*tasks)
    assert woke == [101.0, 111.0]


async def test_sleeping_zero_only_yields() -> None:
    clock = FakeClock(start=5.0)
    await clock.sleep(0)
    assert clock.now() == 5.0


def test_advance_needs_no_loop_and_never_goes_back() -> None:
    clock = FakeClock(start=0.0)
    assert clock.advance(2.5) == 2.5
    with pytest.raises(ValueError, match="backward"):
        clock.advance(-1)


async def test_autojump_goes_to_each_deadline_in_order_without_wall_time() -> None:
    clock = FakeClock(start=0.0)
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        order.append((name, clock.now()))

    async with clock.autojump():
        await asyncio.gather(sleeper("late", 3600.0), sleeper("early", 2.0), sleeper("mid", 60.0))
    assert order == [("early", 2.0), ("mid", 60.0), ("late", 3600.0)]


async def test_autojump_waits_while_another_task_can_run() -> None:
    clock = FakeClock(start=0.0)
    steps = 0

    async def busy() -> None:
        nonlocal steps
        for _ in range(50):
            steps += 1
            await asyncio.sleep(0)  # runnable all along: time must not move

    async with clock.autojump():
        sleeping = asyncio.create_task(clock.sleep(1.0))
        await busy()
        assert clock.now() == 0.0
        await sleeping
    assert steps == 50
    assert clock.now() == 1.0


async def test_wait_within_times_out_on_fake_time_and_cancels_the_work() -> None:
    clock = FakeClock(start=0.0)
    never = asyncio.Event()
    async with clock.autojump():
        with pytest.raises(TimeoutError):
            await wait_within(clock, never.wait(), 15.0)
    assert clock.now() == 15.0


async def test_wait_within_returns_the_value_in_time() -> None:
    clock = FakeClock()

    async def answer() -> int:
        return 42

    assert await wait_within(clock, answer(), 1.0) == 42
