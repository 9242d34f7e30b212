"""Reconnect delays: exponential backoff with jitter, as a pure function.

Callers: :class:`testfleet.worker.agent.WorkerAgent` between connection tries.
Jitter spreads a fleet's reconnects after a coordinator restart so a hundred
workers do not knock at the same instant.
"""

from __future__ import annotations

import random


def backoff_delay(
    failures: int, rng: random.Random, base: float = 0.25, cap: float = 30.0
) -> float:
    """Seconds to wait after ``failures`` consecutive failed tries (0 = first retry).

    "Equal jitter": half the exponential step is fixed, half is random, so the
    delay grows steadily but two workers rarely pick the same moment.
    """
    step = min(cap, base * float(2 ** min(failures, 32)))
    return step / 2 + rng.uniform(0, step / 2)
