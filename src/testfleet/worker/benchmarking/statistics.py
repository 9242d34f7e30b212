"""Latency statistics of one batch size (pure; no torch).

Callers: the runner summarises the per-iteration latencies that
:func:`~testfleet.worker.benchmarking.timing.time_steps` measured.

Percentile method: linear interpolation between closest ranks, the method
NumPy calls ``"linear"`` (Hyndman and Fan type 7) and its default. For sorted
values x[0..n-1] the q-th percentile sits at position h = (n - 1) * q / 100 and
is x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)]). It is
monotone in q, so p50 <= p90 <= p99 always, and with one value every
percentile is that value. Throughput is ``batch_size / mean latency``, in items
per second: the rate a sustained stream of such batches would reach.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from testfleet.domain.benchmark import BatchSizeMeasurement

PERCENTILE_METHOD = "linear interpolation between closest ranks (numpy 'linear', type 7)"
_NS_PER_MS = 1_000_000


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) of values already sorted ascending."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    position = (len(sorted_values) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    low, high = float(sorted_values[lower]), float(sorted_values[upper])
    return low + fraction * (high - low)


def summarise(
    latencies_ns: Sequence[int], *, batch_size: int, memory_mb: float
) -> BatchSizeMeasurement:
    """Mean, p50/p90/p99 in milliseconds and throughput, from per-iteration latencies."""
    if not latencies_ns:
        raise ValueError("no timed iterations to summarise")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ordered = sorted(max(0, value) / _NS_PER_MS for value in latencies_ns)
    mean_ms = math.fsum(ordered) / len(ordered)
    # A step faster than the clock's resolution reads 0 ns; report no throughput
    # rather than an infinite one.
    throughput = batch_size / (mean_ms / 1000.0) if mean_ms > 0 else 0.0
    p50 = percentile(ordered, 50)
    # Monotone in exact arithmetic; max() guards against a last-bit rounding step back.
    p90 = max(p50, percentile(ordered, 90))
    p99 = max(p90, percentile(ordered, 99))
    return BatchSizeMeasurement(
        latency_ms=mean_ms,
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p99_ms=p99,
        throughput_items_per_second=throughput,
        memory_mb=max(0.0, memory_mb),
        iterations=len(ordered),
    )
