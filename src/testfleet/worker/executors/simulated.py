"""The ``simulated`` executor: a task that only waits, for load tests and benchmarks.

Callers: the worker agent, for tasks of type ``simulated`` (see
``domain.task_configs.SimulatedConfig``). Dispatch benchmarks send thousands of
zero-work tasks, so a zero duration returns without awaiting anything; a
non-zero wait is interruptible by the attempt's cancel event. It waits, and
is timed, on the attempt's clock (``ExecutionContext.clock``), so on a fake
clock a task of 30 simulated seconds takes 30 fake seconds and no wall time. Its results
always say ``is_simulated: true`` (design invariant 6): nothing it produces may
pass for a real measurement.

Randomness: with ``seed`` set, draws come from ``random.Random`` seeded with
the seed and the attempt number, so a run is reproducible while a retry of a
flaky attempt draws afresh (and can succeed). Without a seed, system
randomness.
"""

from __future__ import annotations

import math
import random

from testfleet.clock import wait_within
from testfleet.domain.enums import ErrorClass, ResultStatus, TaskType
from testfleet.domain.result import TaskResult
from testfleet.domain.task import TaskSpec
from testfleet.domain.task_configs import DurationDistribution, SampledDuration, SimulatedConfig
from testfleet.worker.executors.base import (
    ExecutionContext,
    ExecutorBase,
    Failure,
    ResultBuilder,
)


def attempt_rng(seed: int | None, attempt: int) -> random.Random:
    """The generator for one attempt: reproducible with a seed, else system-seeded."""
    if seed is None:
        return random.Random()
    # A str seed is hashed with SHA-512 by random.seed, so this is stable across
    # processes and Python versions (unlike hash() of a tuple).
    return random.Random(f"testfleet-simulated:{seed}:{attempt}")


def sample_duration(sampled: SampledDuration, rng: random.Random) -> float:
    """Draw one duration in seconds, capped at ``max_seconds`` for either distribution."""
    if sampled.distribution is DurationDistribution.LOGNORMAL:
        assert sampled.median_seconds is not None  # the config validator guarantees it
        try:
            value = sampled.median_seconds * math.exp(sampled.sigma * rng.gauss(0.0, 1.0))
        except OverflowError:
            value = sampled.max_seconds
    else:
        assert sampled.low_seconds is not None
        assert sampled.high_seconds is not None
        value = rng.uniform(sampled.low_seconds, sampled.high_seconds)
    return min(max(value, 0.0), sampled.max_seconds)


class SimulatedExecutor(ExecutorBase):
    """Waits the configured or sampled duration, then completes or (by chance) fails."""

    task_type: TaskType = TaskType.SIMULATED

    async def run(self, task: TaskSpec, context: ExecutionContext) -> TaskResult:
        out = ResultBuilder(task, context, is_simulated=True, timer=context.clock.now)

        def finish(status: ResultStatus, error: Failure | None, duration: float) -> TaskResult:
            return out.finish(status, error, results={"simulated_duration_seconds": duration})

        config = out.parse_config(SimulatedConfig)
        if isinstance(config, TaskResult):
            return config

        rng = attempt_rng(config.seed, context.attempt)
        if config.sampled_duration is not None:
            duration = sample_duration(config.sampled_duration, rng)
        else:
            duration = config.duration_seconds or 0.0
        # Drawn after the duration, so the duration does not depend on fail_probability.
        fails = config.fail_probability > 0 and rng.random() < config.fail_probability

        if context.cancel_event.is_set():
            return finish(ResultStatus.CANCELLED, (ErrorClass.CANCELLED, "cancelled"), duration)
        timeout = task.timeout_seconds
        if duration > 0:
            try:
                await wait_within(
                    context.clock, context.cancel_event.wait(), min(duration, timeout)
                )
            except TimeoutError:
                pass  # waited the whole time: the normal case
            else:
                return finish(ResultStatus.CANCELLED, (ErrorClass.CANCELLED, "cancelled"), duration)
        if duration > timeout:
            message = f"timed out after {timeout:g} s (simulated duration {duration:g} s)"
            return finish(ResultStatus.TIMED_OUT, (ErrorClass.TIMEOUT, message), duration)
        if fails:
            return finish(
                ResultStatus.FAILED, (ErrorClass.TASK_FAILURE, "simulated failure"), duration
            )
        return finish(ResultStatus.COMPLETED, None, duration)
