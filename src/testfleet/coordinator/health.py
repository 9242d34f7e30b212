"""The coordinator's own health as the dashboard's overview shows it.

Callers: the app factory hands :func:`coordinator_health` over the metrics'
recent figures to the dashboard (``add_dashboard(health=...)``); the overview
page and the event stream's overview fragment render it. The figures come
from :class:`~testfleet.coordinator.metrics.Metrics`: each DuckDB group
commit's duration (``observe_commit``, called by the loop) and how late the
event loop woke the lag probe's sleeper (``probe_lag``, on the injected
clock). The same figures are on ``/metrics`` as
``testfleet_store_commit_seconds`` and ``testfleet_event_loop_lag_seconds``;
this is the recent window of them, summarised for a person.

Pure: numbers in, a value out, so the unit tests need no loop and no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Recent commits summarised (a few minutes of a busy coordinator's turns).
COMMITS_KEPT = 200
#: Recent lag probes summarised (a minute at one probe a second).
LAGS_KEPT = 60


@dataclass(frozen=True, slots=True)
class CoordinatorHealth:
    """Recent DuckDB commit times and event-loop lag, in seconds."""

    #: Commits in the window (0: none since start, and the figures below are None).
    commits: int
    commit_last: float | None
    commit_median: float | None
    commit_p95: float | None
    #: The lag probe's last reading, and the worst in its window (None: no probe yet).
    loop_lag: float | None
    loop_lag_max: float | None


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in 0-1) of ``values``; None if empty.

    Nearest rank rather than interpolation: the figure shown is a commit that
    really took that long."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0 and 1, got {fraction}")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def coordinator_health(
    commit_seconds: Sequence[float], lag_seconds: Sequence[float]
) -> CoordinatorHealth:
    """Summarise the recent commits and lag readings (each oldest first)."""
    commits = list(commit_seconds)[-COMMITS_KEPT:]
    lags = list(lag_seconds)[-LAGS_KEPT:]
    return CoordinatorHealth(
        commits=len(commits),
        commit_last=commits[-1] if commits else None,
        commit_median=percentile(commits, 0.5),
        commit_p95=percentile(commits, 0.95),
        loop_lag=lags[-1] if lags else None,
        loop_lag_max=max(lags) if lags else None,
    )
