"""The timed loop: warmup steps, then timed steps with the device synchronised.

Callers: the runner, once per batch size, inside ``torch.inference_mode()``
with ``step`` running one forward pass. Kept free of torch (``synchronize`` and
``clock`` are injected), so the loop itself is tested with a fake clock.

Every timed step is bracketed by ``synchronize()`` on both sides: before the
clock starts, so work still queued from the previous step is not charged to
this one; before it stops, so asynchronous devices (CUDA, MPS) have finished
the step rather than only accepted it. Warmup steps are synchronised too, so
the first timed step does not inherit their queue. ``time.perf_counter_ns`` is
monotonic, has the finest resolution Python offers and, being an integer,
loses nothing to float rounding.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def time_steps(
    step: Callable[[], object],
    *,
    warmup: int,
    iterations: int,
    synchronize: Callable[[], None],
    clock: Callable[[], int] = time.perf_counter_ns,
) -> list[int]:
    """Run ``warmup`` untimed and ``iterations`` timed steps; the timed latencies in ns."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    for _ in range(warmup):
        step()
        synchronize()
    latencies: list[int] = []
    for _ in range(iterations):
        synchronize()
        started = clock()
        step()
        synchronize()
        latencies.append(clock() - started)
    return latencies
