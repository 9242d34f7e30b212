"""What the benchmarks page shows: per series, the latest figure against its
baseline, and which regressions are open or recently resolved.

Callers: :mod:`.pages` (the ``/dashboard/benchmarks`` route), with the
store's :meth:`~testfleet.store.contract.StoreReader.regression_samples` read
in a thread. Pure functions, no clock reads: the unit tests build the rows
from samples on fixed times. The baseline is the regression detector's own
(:func:`~testfleet.analysis.regressions.baseline_and_noise` over the runs
before the latest), so the page and ``GET /api/v1/regressions`` agree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from testfleet.analysis.regressions import (
    Regression,
    RegressionSettings,
    RegressionStatus,
    Sample,
    SeriesKey,
    SeriesKind,
    baseline_and_noise,
)

#: Resolved regressions the page lists (newest first); older ones are in the API.
RESOLVED_SHOWN = 20
#: Series rows the page lists (the store already bounds the runs per series).
SERIES_SHOWN = 500


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One benchmark series: its latest run and the baseline before it."""

    key: SeriesKey
    runs: int
    latest: float
    latest_time: float
    #: Median of the runs before the latest (None: fewer than two of them).
    baseline: float | None
    change_percent: float | None
    regressed: bool

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.key.labels)


def series_rows(samples: list[Sample], regressions: list[Regression]) -> list[SeriesRow]:
    """Per benchmark series in ``samples``: runs, the latest figure, the baseline
    of up to a detector window of runs before it, and whether a regression is open."""
    window = RegressionSettings().window
    by_series: dict[SeriesKey, list[Sample]] = defaultdict(list)
    for sample in samples:
        if sample.series.kind is SeriesKind.BENCHMARK:
            by_series[sample.series].append(sample)
    open_keys = {r.series for r in regressions if r.status is RegressionStatus.OPEN}
    rows = []
    for key in sorted(by_series)[:SERIES_SHOWN]:
        runs = sorted(by_series[key], key=lambda s: (s.time, s.order))
        latest = runs[-1]
        before = [s.value for s in runs[:-1]][-window:]
        baseline = baseline_and_noise(before)[0] if len(before) >= 2 else None
        change = (
            100.0 * (latest.value - baseline) / abs(baseline)
            if baseline is not None and baseline != 0
            else None
        )
        rows.append(
            SeriesRow(
                key=key,
                runs=len(runs),
                latest=latest.value,
                latest_time=latest.time,
                baseline=baseline,
                change_percent=change,
                regressed=key in open_keys,
            )
        )
    return rows


def split_regressions(found: list[Regression]) -> tuple[list[Regression], list[Regression]]:
    """Open benchmark regressions (in series order) and the newest resolved ones."""
    benchmarks = [r for r in found if r.series.kind is SeriesKind.BENCHMARK]
    open_ones = [r for r in benchmarks if r.status is RegressionStatus.OPEN]
    resolved = sorted(
        (r for r in benchmarks if r.status is RegressionStatus.RESOLVED),
        key=lambda r: r.resolved or 0.0,
        reverse=True,
    )
    return open_ones, resolved[:RESOLVED_SHOWN]
