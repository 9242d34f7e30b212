"""SimulatedExecutor: zero-work speed path, reproducible sampling, failure, timeout, cancel.

Every wait happens on a :class:`FakeClock` (autojumping, or advanced by the
test), so no test here waits on wall time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

import pytest

from testfleet.clock import Clock
from testfleet.domain.enums import ErrorClass, ResultStatus, TaskType
from testfleet.domain.task import TaskSpec
from testfleet.domain.task_configs import SampledDuration
from testfleet.testing.fake_clock import FakeClock
from testfleet.worker.executors.base import ExecutionContext
from testfleet.worker.executors.simulated import SimulatedExecutor, attempt_rng, sample_duration


def simulated_task(*, timeout: float = 60.0, **config: Any) -> TaskSpec:
    return TaskSpec(
        task_id="sim-1", type=TaskType.SIMULATED, timeout_seconds=timeout, config=config
    )


class WatchedEvent(asyncio.Event):
    """A cancel event that says when someone starts waiting on it: the executor
    does so only once its task is running (past every before-start check)."""

    def __init__(self) -> None:
        super().__init__()
        self.waited_on = asyncio.Event()

    async def wait(self) -> Literal[True]:
        self.waited_on.set()
        return await super().wait()


def make_context(
    attempt: int = 1, cancel_event: asyncio.Event | None = None, clock: Clock | None = None
) -> ExecutionContext:
    """A context on ``clock``; by default a fake one nobody advances, so a test
    that waited on it by mistake would hang (and time out) rather than sleep."""
    return ExecutionContext(
        worker_id="worker-sim",
        attempt_id=100 + attempt,
        attempt=attempt,
        cancel_event=cancel_event or asyncio.Event(),
        work_dir=Path("/nonexistent/never-used"),
        clock=clock or FakeClock(),
    )


async def test_zero_duration_completes_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_waiting(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a zero-duration task must not wait")

    monkeypatch.setattr(asyncio, "sleep", no_waiting)
    monkeypatch.setattr(asyncio, "wait_for", no_waiting)
    executor = SimulatedExecutor()

    for config in ({}, {"duration_seconds": 0}):
        result = await executor.run(simulated_task(**config), make_context())
        assert result.status is ResultStatus.COMPLETED
        assert result.error is None
        assert result.simulation_status.is_simulated is True
        assert result.results == {"simulated_duration_seconds": 0.0}
        assert result.task_id == "sim-1"
        assert result.worker_id == "worker-sim"
        assert result.hardware_metrics == {}


async def test_many_zero_work_tasks_all_complete() -> None:
    executor = SimulatedExecutor()
    results = await asyncio.gather(
        *(executor.run(simulated_task(), make_context()) for _ in range(2000))
    )
    assert all(r.status is ResultStatus.COMPLETED for r in results)


async def test_a_fixed_duration_completes_after_that_long_on_the_clock() -> None:
    clock = FakeClock()
    started = clock.now()
    async with clock.autojump():
        result = await SimulatedExecutor().run(
            simulated_task(duration_seconds=45), make_context(clock=clock)
        )
    assert result.status is ResultStatus.COMPLETED
    assert result.results == {"simulated_duration_seconds": 45.0}
    assert result.simulation_status.is_simulated is True
    assert clock.now() == started + 45  # it waited the whole duration, on the clock
    assert result.execution_time_seconds == 45.0


class WatchedClock(FakeClock):
    """A fake clock that says when someone first sleeps on it."""

    def __init__(self) -> None:
        super().__init__()
        self.slept_on = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.slept_on.set()
        await super().sleep(seconds)


async def test_the_wait_ends_only_when_the_clock_reaches_the_duration() -> None:
    clock = WatchedClock()
    started = clock.now()
    running = asyncio.create_task(
        SimulatedExecutor().run(simulated_task(duration_seconds=30), make_context(clock=clock))
    )
    await asyncio.wait_for(clock.slept_on.wait(), timeout=10)  # a guard, not an expectation
    assert clock.next_deadline == started + 30
    clock.advance(29.5)
    await asyncio.sleep(0)  # a sleeper woken by the advance would run now
    assert not running.done()  # half a second early: still waiting
    assert clock.next_deadline == started + 30
    clock.advance(0.5)
    result = await asyncio.wait_for(running, timeout=10)
    assert result.status is ResultStatus.COMPLETED


async def test_sampled_durations_are_reproducible_with_a_seed() -> None:
    config: dict[str, Any] = {
        "sampled_duration": {"distribution": "lognormal", "median_seconds": 0.001, "sigma": 1.0},
        "seed": 1234,
    }
    executor = SimulatedExecutor()
    clock = FakeClock()

    async def duration(attempt: int) -> float:
        result = await executor.run(simulated_task(**config), make_context(attempt, clock=clock))
        assert result.status is ResultStatus.COMPLETED
        value = result.results["simulated_duration_seconds"]
        assert isinstance(value, float)
        return value

    async with clock.autojump():
        first, again, retry = await duration(1), await duration(1), await duration(2)
    assert first == again
    assert first != retry  # a retry draws afresh


def test_lognormal_sampling_is_capped_and_positive() -> None:
    sampled = SampledDuration(
        distribution="lognormal", median_seconds=10.0, sigma=3.0, max_seconds=50.0
    )
    rng = attempt_rng(7, 1)
    draws = [sample_duration(sampled, rng) for _ in range(2000)]
    assert all(0 < d <= 50.0 for d in draws)
    assert max(draws) == 50.0  # with sigma 3 some draws exceed the cap
    assert sorted(draws)[1000] == pytest.approx(10.0, rel=0.25)  # the median


def test_uniform_sampling_stays_in_range() -> None:
    sampled = SampledDuration(distribution="uniform", low_seconds=2.0, high_seconds=3.0)
    rng = attempt_rng(None, 1)
    draws = [sample_duration(sampled, rng) for _ in range(1000)]
    assert all(2.0 <= d <= 3.0 for d in draws)


def test_seeded_generators_agree_and_unseeded_differ() -> None:
    assert attempt_rng(5, 3).random() == attempt_rng(5, 3).random()
    assert attempt_rng(5, 3).random() != attempt_rng(5, 4).random()
    assert attempt_rng(None, 1).random() != attempt_rng(None, 1).random()


async def test_fail_probability_one_always_fails() -> None:
    executor = SimulatedExecutor()
    for attempt in range(1, 6):
        result = await executor.run(simulated_task(fail_probability=1.0), make_context(attempt))
        assert result.status is ResultStatus.FAILED
        assert result.error is not None
        assert result.error.error_class is ErrorClass.TASK_FAILURE
        assert result.error.message == "simulated failure"
        assert result.simulation_status.is_simulated is True


async def test_fail_probability_zero_never_fails() -> None:
    executor = SimulatedExecutor()
    results = [
        await executor.run(simulated_task(fail_probability=0.0, seed=s), make_context())
        for s in range(50)
    ]
    assert all(r.status is ResultStatus.COMPLETED for r in results)


async def test_seeded_failures_are_reproducible() -> None:
    executor = SimulatedExecutor()

    async def outcomes() -> list[ResultStatus]:
        return [
            (
                await executor.run(simulated_task(fail_probability=0.5, seed=99), make_context(a))
            ).status
            for a in range(1, 21)
        ]

    first = await outcomes()
    assert first == await outcomes()
    assert set(first) == {ResultStatus.COMPLETED, ResultStatus.FAILED}


async def test_a_duration_beyond_the_timeout_times_out() -> None:
    clock = FakeClock()
    started = clock.now()
    async with clock.autojump():
        result = await SimulatedExecutor().run(
            simulated_task(duration_seconds=30, timeout=0.2), make_context(clock=clock)
        )
    # It gave up at the timeout, not after the whole duration.
    assert clock.now() == started + 0.2
    assert result.status is ResultStatus.TIMED_OUT
    assert result.error is not None
    assert result.error.error_class is ErrorClass.TIMEOUT
    assert result.simulation_status.is_simulated is True
    assert result.results == {"simulated_duration_seconds": 30.0}


async def test_cancel_interrupts_the_wait() -> None:
    cancel = WatchedEvent()
    context = make_context(cancel_event=cancel)
    running = asyncio.create_task(
        SimulatedExecutor().run(simulated_task(duration_seconds=30), context)
    )
    # The task is running (waiting out its 30 s), not about to start: the cancel
    # below takes the interrupted-wait path, not the cancelled-before-start one.
    await asyncio.wait_for(cancel.waited_on.wait(), timeout=10)
    assert not running.done()
    cancel.set()
    # Nobody advances the fake clock: only the cancel can end the wait (the
    # 10 s are a guard against a hang, not an expectation).
    result = await asyncio.wait_for(running, timeout=10)

    assert result.status is ResultStatus.CANCELLED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.CANCELLED
    assert result.simulation_status.is_simulated is True


async def test_cancelled_before_start_is_cancelled_even_with_zero_duration() -> None:
    context = make_context()
    context.cancel_event.set()
    result = await SimulatedExecutor().run(simulated_task(), context)
    assert result.status is ResultStatus.CANCELLED


async def test_config_that_bypassed_validation_is_invalid_config() -> None:
    task = TaskSpec.model_construct(
        task_id="sim-1",
        type=TaskType.SIMULATED,
        config={"duration_seconds": -1},
        timeout_seconds=5.0,
    )
    result = await SimulatedExecutor().run(task, make_context())
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert result.simulation_status.is_simulated is True
