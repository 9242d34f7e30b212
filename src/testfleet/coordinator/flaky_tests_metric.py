"""The ``testfleet_flaky_tests`` gauge: tests that were flaky in the last day.

Callers: the app factory builds one :class:`FlakyTestsGauge` per app and
``GET /metrics`` (:mod:`testfleet.coordinator.metrics_api`) asks it to
:meth:`~FlakyTestsGauge.refresh_if_stale` before rendering, as it asks the
regression watch. A test (project, node id) counts when, within
:data:`FLAKY_WINDOW_SECONDS`, it passed only on a rerun, or its first-pass
verdicts both passed and failed (see
:func:`testfleet.store.test_history_queries.count_flaky_tests`).

Why from the store and not from counters the loop keeps: flipped verdicts
need each test's earlier runs, which the loop does not hold, and a gauge over
a window must survive a coordinator restart. The query reads one day of
``test_results`` once a minute at most (the scrape is every 15 s), in a
thread; between refreshes the gauge keeps its last figure.
"""

from __future__ import annotations

import asyncio

from testfleet.clock import Clock
from testfleet.coordinator.metrics import Metrics
from testfleet.store.contract import StoreReader

#: The window a test's flakiness is looked for in (seconds).
FLAKY_WINDOW_SECONDS = 86_400.0
#: ``/metrics`` recounts at most this often (seconds on the coordinator's clock).
REFRESH_SECONDS = 60.0


class FlakyTestsGauge:
    """Keeps :attr:`Metrics.flaky_tests` current from the store."""

    def __init__(self, store: StoreReader, metrics: Metrics, clock: Clock) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._refreshed: float | None = None

    async def refresh_if_stale(self) -> None:
        """Recount when the figure is older than :data:`REFRESH_SECONDS`; raises
        ``StoreError`` (the route logs it and serves the last figure)."""
        now = self._clock.now()
        if self._refreshed is not None and now - self._refreshed < REFRESH_SECONDS:
            return
        self._refreshed = now
        count = await asyncio.to_thread(self._store.count_flaky_tests, now - FLAKY_WINDOW_SECONDS)
        self._metrics.flaky_tests = count
