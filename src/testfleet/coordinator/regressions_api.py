"""``GET /api/v1/regressions``: benchmark figures and test durations that got worse.

Callers: ``testfleet results regressions`` (and any HTTP client, the
dashboard). The runs come from the store (``Store.regression_samples``, in a
thread, never on the event loop); the judging is the pure
:func:`testfleet.analysis.regressions.find_regressions`. Each answer also
refreshes the ``testfleet_regressions_open`` gauge, which ``/metrics``
otherwise refreshes itself when its figure is older than
:data:`GAUGE_REFRESH_SECONDS` (:class:`RegressionWatch`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field

from testfleet.analysis.regressions import (
    Figure,
    Regression,
    RegressionStatus,
    SeriesKind,
    find_regressions,
)
from testfleet.clock import Clock
from testfleet.coordinator.api_errors import (
    FORBIDDEN,
    INVALID_PARAMETER,
    STORAGE_ERROR,
    UNAUTHENTICATED,
    refusals,
)
from testfleet.coordinator.api_models import ResponseModel, Timestamp
from testfleet.coordinator.api_views import iso
from testfleet.coordinator.auth import ViewerToken
from testfleet.coordinator.metrics import Metrics
from testfleet.store.contract import StoreReader

#: ``/metrics`` recomputes open regressions at most this often (seconds on the
#: coordinator's clock): it reads the store, and Prometheus scrapes every 15 s.
GAUGE_REFRESH_SECONDS = 60.0


class RegressionView(ResponseModel):
    """One regression of one series, as the API shows it."""

    kind: SeriesKind = Field(description="`benchmark` (a model's figure) or `test` (a duration).")
    name: str = Field(description="The model, or the test's node id.")
    figure: Figure
    labels: dict[str, str] = Field(
        description="The rest of the series' key: variant, hardware, device, precision, "
        "batch size and whether simulated (benchmarks); the project (tests)."
    )
    status: RegressionStatus
    baseline: float = Field(description="Median of the recent normal runs before it began.")
    noise: float = Field(description="Their spread: 1.4826 x the median absolute deviation.")
    latest_value: float = Field(description="The figure of the latest worse run.")
    change_percent: float | None = Field(
        description="The latest worse run against the baseline, signed; null for a zero baseline."
    )
    worse_runs: int
    started: Timestamp | None
    last_worse: Timestamp | None
    resolved: Timestamp | None


class RegressionList(ResponseModel):
    """The body of ``GET /api/v1/regressions``."""

    regressions: list[RegressionView]
    open: int = Field(description="How many of them are open.")


def regression_view(regression: Regression) -> RegressionView:
    change = regression.change_percent
    return RegressionView(
        kind=regression.series.kind,
        name=regression.series.name,
        figure=regression.series.figure,
        labels=dict(regression.series.labels),
        status=regression.status,
        baseline=regression.baseline,
        noise=regression.noise,
        latest_value=regression.latest_value,
        change_percent=None if change in (float("inf"), float("-inf")) else round(change, 3),
        worse_runs=regression.worse_runs,
        started=iso(regression.started),
        last_worse=iso(regression.last_worse),
        resolved=iso(regression.resolved),
    )


class RegressionWatch:
    """Finds regressions from the store and keeps the open-regressions gauge current."""

    def __init__(self, store: StoreReader, metrics: Metrics, clock: Clock) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._refreshed: float | None = None

    async def find(self, *, include_resolved: bool) -> list[Regression]:
        """Every regression (open; resolved too if asked); refreshes the gauge."""
        samples = await asyncio.to_thread(self._store.regression_samples)
        found = await asyncio.to_thread(find_regressions, samples, include_resolved=True)
        open_ones = [r for r in found if r.status is RegressionStatus.OPEN]
        counts = Counter((r.series.kind.value, r.series.figure.value) for r in open_ones)
        self._metrics.set_open_regressions(counts)
        self._refreshed = self._clock.now()
        return found if include_resolved else open_ones

    async def refresh_if_stale(self) -> None:
        """Recompute the gauge when it is older than :data:`GAUGE_REFRESH_SECONDS`."""
        now = self._clock.now()
        if self._refreshed is None or now - self._refreshed >= GAUGE_REFRESH_SECONDS:
            await self.find(include_resolved=False)


def build_regressions_router(watch: RegressionWatch) -> APIRouter:
    """``GET /api/v1/regressions`` (viewer), bound to one coordinator's ``watch``."""
    router = APIRouter(prefix="/api/v1")

    @router.get(
        "/regressions",
        response_model=RegressionList,
        responses=refusals(UNAUTHENTICATED, FORBIDDEN, INVALID_PARAMETER, STORAGE_ERROR),
        summary="Benchmark figures and test durations that got worse beyond their noise",
        description="Per series, a baseline (median of the recent runs) and its noise "
        "(robust spread); flagged when two runs in a row are worse by more than 10 % and "
        "3 x the noise (test durations: and by 0.1 s). Open only, unless `include_resolved`.",
    )
    async def regressions(
        _: ViewerToken,
        include_resolved: Annotated[
            bool, Query(description="Also list regressions that have recovered.")
        ] = False,
        kind: Annotated[
            SeriesKind | None, Query(description="Only benchmarks, or only tests.")
        ] = None,
    ) -> RegressionList:
        found = await watch.find(include_resolved=include_resolved)
        if kind is not None:
            found = [r for r in found if r.series.kind is kind]
        return RegressionList(
            regressions=[regression_view(r) for r in found],
            open=sum(1 for r in found if r.status is RegressionStatus.OPEN),
        )

    return router
