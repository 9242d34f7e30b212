"""Regression detection: has a measured figure got worse, beyond its own noise?

Callers: the coordinator's ``GET /api/v1/regressions`` route
(:mod:`testfleet.coordinator.regressions_api`, behind ``testfleet results
regressions``), the ``/metrics`` gauge of open regressions, and the alert
rules (another module calls :func:`find_regressions` on the same samples).
Pure: it is handed the samples (:mod:`testfleet.store.regression_queries`
reads them from ``benchmark_results`` and ``test_results``) and reads no
clock, so the same history always gives the same answer.

The method, per series (one configuration measured again and again):

* the *baseline* is the median of the last ``window`` runs judged normal, and
  the *noise* the spread of those runs (1.4826 x their median absolute
  deviation: the standard deviation's robust estimate, which one wild run
  does not move);
* a run is *worse* when it is worse than the baseline by more than
  ``threshold`` (relative, 10 % by default) **and** by more than ``noise_k``
  x the noise (and by at least ``min_delta``, for figures such as test
  durations where a few milliseconds are no news);
* ``confirm`` worse runs in a row open a regression (one outlier never does;
  it stays in the baseline's pool, where the median ignores it); while one
  is open the baseline is frozen at what it was before, so a regression is
  not forgotten merely by lasting; ``confirm`` normal runs in a row resolve
  it.

Both conditions matter: a relative threshold alone flags a noisy series on
every unlucky run; a noise bound alone flags a 0.5 % change on a very steady
one that nobody cares about.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

#: Scales a median absolute deviation to a standard deviation (normal data).
MAD_TO_SIGMA = 1.4826


class Direction(StrEnum):
    """Which way is better for a figure."""

    HIGHER_IS_BETTER = "higher_is_better"
    LOWER_IS_BETTER = "lower_is_better"


class Figure(StrEnum):
    """The figures watched for regressions, each with its direction (:data:`DIRECTIONS`)."""

    THROUGHPUT = "throughput_items_per_second"
    LATENCY = "latency_ms"
    TEST_DURATION = "duration_seconds"


DIRECTIONS: dict[Figure, Direction] = {
    Figure.THROUGHPUT: Direction.HIGHER_IS_BETTER,
    Figure.LATENCY: Direction.LOWER_IS_BETTER,
    Figure.TEST_DURATION: Direction.LOWER_IS_BETTER,
}


class RegressionStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class SeriesKind(StrEnum):
    BENCHMARK = "benchmark"
    TEST = "test"


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    """One configuration measured repeatedly.

    Benchmarks: ``name`` is the model, ``labels`` the variant, hardware,
    device, precision, batch size and whether simulated (a simulated series
    is never mixed with real hardware). Tests: ``name`` is the node id,
    ``labels`` its project."""

    kind: SeriesKind
    name: str
    figure: Figure
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """One run's figure. ``order`` breaks ties of ``time`` (an attempt id)."""

    series: SeriesKey
    time: float
    value: float
    order: int = 0


@dataclass(frozen=True, slots=True)
class RegressionSettings:
    """The knobs; the defaults suit benchmark figures (see the module docstring)."""

    #: Runs of the baseline's pool (the most recent normal ones).
    window: int = 10
    #: Runs needed before any judgement (fewer: no baseline yet).
    min_runs: int = 5
    #: Worse by more than this fraction of the baseline ...
    threshold: float = 0.10
    #: ... and by more than this many noise units ...
    noise_k: float = 3.0
    #: ... and by at least this much, in the figure's unit.
    min_delta: float = 0.0
    #: Consecutive worse runs to open a regression, normal runs to resolve it.
    confirm: int = 2

    def __post_init__(self) -> None:
        problems = []
        if self.window < 2:
            problems.append(f"window must be at least 2, got {self.window}")
        if not 2 <= self.min_runs <= self.window:
            problems.append(f"min_runs must be between 2 and window, got {self.min_runs}")
        for name in ("threshold", "noise_k", "min_delta"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                problems.append(f"{name} must be a finite number >= 0, got {value}")
        if self.confirm < 1:
            problems.append(f"confirm must be at least 1, got {self.confirm}")
        if problems:
            raise ValueError("; ".join(problems))


#: Test durations: a regression must also cost at least a tenth of a second.
TEST_DURATION_SETTINGS = RegressionSettings(min_delta=0.1)
_DEFAULTS = {SeriesKind.TEST: TEST_DURATION_SETTINGS}


@dataclass(frozen=True, slots=True)
class Regression:
    """One regression of one series: when it began, how bad, and whether it is over."""

    series: SeriesKey
    status: RegressionStatus
    #: The baseline (median) and noise (robust sigma) before it began.
    baseline: float
    noise: float
    #: The first worse run's time; the last worse run's time and figure.
    started: float
    last_worse: float
    latest_value: float
    #: Worse runs in it so far.
    worse_runs: int
    #: When it resolved (the first of the normal runs that ended it).
    resolved: float | None = None

    @property
    def change_percent(self) -> float:
        """The latest worse run against the baseline, signed (+ slower, - less throughput)."""
        if self.baseline == 0:
            return math.inf
        return 100.0 * (self.latest_value - self.baseline) / abs(self.baseline)


@dataclass(slots=True)
class _Scan:
    """One series' running judgement (see :func:`_scan_series`)."""

    pool: list[float] = field(default_factory=list)
    #: Worse runs not yet confirmed: (time, value), with the baseline and noise at the first.
    suspects: list[tuple[float, float]] = field(default_factory=list)
    suspect_baseline: tuple[float, float] = (0.0, 0.0)
    open: Regression | None = None
    #: Normal runs since the open regression's last worse one: (time, value).
    recovering: list[tuple[float, float]] = field(default_factory=list)


def baseline_and_noise(values: list[float]) -> tuple[float, float]:
    """The median of ``values`` and 1.4826 x their median absolute deviation."""
    median = statistics.median(values)
    mad = statistics.median(abs(value - median) for value in values)
    return median, MAD_TO_SIGMA * mad


def is_worse(
    value: float, baseline: float, noise: float, direction: Direction, settings: RegressionSettings
) -> bool:
    """Whether ``value`` is worse than ``baseline`` beyond the threshold, the noise
    and the minimum delta (all three)."""
    delta = baseline - value if direction is Direction.HIGHER_IS_BETTER else value - baseline
    return (
        delta > settings.threshold * abs(baseline)
        and delta > settings.noise_k * noise
        and delta >= settings.min_delta
        and delta > 0
    )


def _scan_series(
    samples: list[Sample], settings: RegressionSettings, direction: Direction
) -> list[Regression]:
    """Walk one series oldest first; every regression it opened (and maybe resolved)."""
    found: list[Regression] = []
    scan = _Scan()
    for sample in samples:
        value = sample.value
        if len(scan.pool) < settings.min_runs:
            scan.pool.append(value)
            continue
        if scan.open is not None:
            regression = scan.open
            if is_worse(value, regression.baseline, regression.noise, direction, settings):
                scan.recovering.clear()
                scan.open = _with(regression, last_worse=sample.time, latest_value=value, add=1)
                continue
            scan.recovering.append((sample.time, value))
            if len(scan.recovering) >= settings.confirm:
                found.append(
                    _with(
                        regression, status=RegressionStatus.RESOLVED, resolved=scan.recovering[0][0]
                    )
                )
                scan.open = None
                # The baseline starts again from the recovered runs and the old pool.
                scan.pool.extend(v for _, v in scan.recovering)
                scan.recovering.clear()
                del scan.pool[: -settings.window]
            continue
        baseline, noise = baseline_and_noise(scan.pool[-settings.window :])
        if not is_worse(value, baseline, noise, direction, settings):
            # Unconfirmed suspects were outliers: they join the pool like any run.
            scan.pool.extend(v for _, v in scan.suspects)
            scan.suspects.clear()
            scan.pool.append(value)
            del scan.pool[: -settings.window]
            continue
        if not scan.suspects:
            scan.suspect_baseline = (baseline, noise)
        scan.suspects.append((sample.time, value))
        if len(scan.suspects) >= settings.confirm:
            base, spread = scan.suspect_baseline
            scan.open = Regression(
                series=sample.series,
                status=RegressionStatus.OPEN,
                baseline=base,
                noise=spread,
                started=scan.suspects[0][0],
                last_worse=sample.time,
                latest_value=value,
                worse_runs=len(scan.suspects),
            )
            scan.suspects.clear()
    if scan.open is not None:
        found.append(scan.open)
    return found


def _with(
    regression: Regression,
    *,
    status: RegressionStatus | None = None,
    resolved: float | None = None,
    last_worse: float | None = None,
    latest_value: float | None = None,
    add: int = 0,
) -> Regression:
    return Regression(
        series=regression.series,
        status=status or regression.status,
        baseline=regression.baseline,
        noise=regression.noise,
        started=regression.started,
        last_worse=regression.last_worse if last_worse is None else last_worse,
        latest_value=regression.latest_value if latest_value is None else latest_value,
        worse_runs=regression.worse_runs + add,
        resolved=resolved if resolved is not None else regression.resolved,
    )


def find_regressions(
    samples: Iterable[Sample],
    settings: RegressionSettings | None = None,
    *,
    settings_by_kind: dict[SeriesKind, RegressionSettings] | None = None,
    include_resolved: bool = False,
) -> list[Regression]:
    """The regressions in ``samples`` (any order, any mix of series).

    ``settings_by_kind`` picks the settings of a kind of series; a kind it does
    not name gets ``settings``, or, neither given, its default
    (:data:`TEST_DURATION_SETTINGS` for tests, :class:`RegressionSettings()` else).
    Open regressions only, unless ``include_resolved``. Ordered by series,
    then start. Non-finite figures are skipped (a failed run has none)."""
    overrides = settings_by_kind or {}
    by_series: dict[SeriesKey, list[Sample]] = defaultdict(list)
    for sample in samples:
        if math.isfinite(sample.value):
            by_series[sample.series].append(sample)
    found: list[Regression] = []
    for key in sorted(by_series):
        series = sorted(by_series[key], key=lambda s: (s.time, s.order))
        chosen = (
            overrides.get(key.kind) or settings or _DEFAULTS.get(key.kind, RegressionSettings())
        )
        found.extend(_scan_series(series, chosen, DIRECTIONS[key.figure]))
    if not include_resolved:
        found = [r for r in found if r.status is RegressionStatus.OPEN]
    return found
