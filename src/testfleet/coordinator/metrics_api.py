"""``GET /metrics``: the coordinator's Prometheus metrics, in the text format.

Callers: Prometheus (or any scraper) with a viewer token: ``authorization:
{credentials_file: ...}`` in the scrape config (README, "Metrics"). The figures
are :class:`~testfleet.coordinator.metrics.Metrics`'; gauges are read from
the live state here, on the event loop, so a scrape never sees a turn half
applied. The open-regressions and flaky-tests gauges read the store, at most
once a minute.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from testfleet.coordinator.api_errors import FORBIDDEN, UNAUTHENTICATED, refusals
from testfleet.coordinator.auth import ViewerToken
from testfleet.coordinator.flaky_tests_metric import FlakyTestsGauge
from testfleet.coordinator.metrics import Metrics
from testfleet.coordinator.regressions_api import RegressionWatch
from testfleet.store.errors import StoreError

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"


def build_metrics_router(
    metrics: Metrics, watch: RegressionWatch, flaky: FlakyTestsGauge | None = None
) -> APIRouter:
    """``GET /metrics`` (viewer) for one coordinator's ``metrics``."""
    router = APIRouter()

    @router.get(
        METRICS_PATH,
        response_class=Response,
        responses={
            200: {
                "description": "The Prometheus text exposition format (version 0.0.4).",
                # Bytes to the document (as the Parquet export): the format is Prometheus's.
                "content": {"text/plain": {"schema": {"type": "string", "format": "binary"}}},
            },
            **refusals(UNAUTHENTICATED, FORBIDDEN),
        },
        summary="Prometheus metrics: workers, queue, attempts, tests, benchmarks, coordinator",
    )
    async def prometheus_metrics(_: ViewerToken) -> Response:
        try:
            await watch.refresh_if_stale()
        except StoreError as exc:
            # The gauge keeps its last figure; the rest of the scrape is worth more.
            log.warning("open regressions not refreshed: %s", exc)
        if flaky is not None:
            try:
                await flaky.refresh_if_stale()
            except StoreError as exc:
                log.warning("flaky tests not recounted: %s", exc)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
