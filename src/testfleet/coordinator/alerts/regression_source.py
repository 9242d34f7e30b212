"""The ``benchmark_regression`` rule's source: open regressions in the store's history.

Callers: :func:`~testfleet.coordinator.app.create_app` hands
:func:`store_regressions` to the :class:`~testfleet.coordinator.alerts.engine.AlertEngine`
(which runs it in a worker thread at each evaluation). It joins the two
halves of issue 11 that were built apart: the rule only knows
:class:`~testfleet.coordinator.alerts.rules.RegressionFinding`, and the
detection (``analysis/regressions.py``) only knows samples; this reads the
samples (``Store.regression_samples``: the newest runs per series) and turns
each *open benchmark* regression into a finding. Test-duration regressions
are left to ``testfleet results regressions`` and ``/metrics``: a slower test
is worth a look, not a page.
"""

from __future__ import annotations

from collections.abc import Sequence

from testfleet.analysis.regressions import SeriesKind, find_regressions
from testfleet.coordinator.alerts.rules import RegressionFinder, RegressionFinding
from testfleet.store.contract import StoreReader


def store_regressions(store: StoreReader) -> RegressionFinder:
    """A finder over ``store``'s history (see the module docstring)."""

    def find(now: float) -> Sequence[RegressionFinding]:
        del now  # the history is what it is; detection has no clock of its own
        findings = []
        for regression in find_regressions(store.regression_samples()):
            series = regression.series
            if series.kind is not SeriesKind.BENCHMARK:
                continue
            labels = {"model": series.name, "figure": series.figure.value, **dict(series.labels)}
            findings.append(
                RegressionFinding(
                    labels=labels,
                    summary=(
                        f"{series.name} {series.figure.value} {regression.change_percent:+.1f} % "
                        f"against its baseline {regression.baseline:.4g} "
                        f"({regression.worse_runs} worse runs)"
                    ),
                    value=regression.change_percent / 100.0,
                )
            )
        return findings

    return find
