"""What the benchmarks page shows: per series, the latest figure against its
baseline, which regressions are open or recently resolved, and per
configuration the batch-size curve and its optimal batch size.

Callers: :mod:`.pages` (the ``/dashboard/benchmarks`` route), with the
store's :meth:`~testfleet.store.contract.StoreReader.regression_samples` read
in a thread. Pure functions, no clock reads: the unit tests build the rows
from samples on fixed times. The baseline is the regression detector's own
(:func:`~testfleet.analysis.regressions.baseline_and_noise` over the runs
before the latest), so the page and ``GET /api/v1/regressions`` agree.

The curves come from the store's latest run per batch size
(:meth:`~testfleet.store.contract.StoreReader.benchmark_latest_per_batch`,
one query for every model): a batch size whose latest run failed (``out_of_memory`` with no
figures) is a point marked failed, never the optimum.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from testfleet.analysis.regressions import (
    Regression,
    RegressionSettings,
    RegressionStatus,
    Sample,
    SeriesKey,
    SeriesKind,
    baseline_and_noise,
)
from testfleet.domain.benchmark import BenchmarkBackend

#: The backend of every row before schema version 10, and the default.
TORCH = BenchmarkBackend.TORCH.value
#: What a history link's ``backend`` may be.
BACKEND_NAMES = frozenset(b.value for b in BenchmarkBackend)

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

    @property
    def history_query(self) -> dict[str, str]:
        """The parameters of its ``/dashboard/benchmarks/history`` link (every label)."""
        return {"model": self.key.name, **dict(self.key.labels)}


def _reading_order(key: SeriesKey) -> tuple[object, ...]:
    """Model, figure, then labels with the batch size by number: the page lists a
    configuration's sizes 1, 8, 16, 32 (a plain sort of the text gave 1, 16, 32, 8,
    which the browser test's screenshot showed)."""
    labels = tuple(
        (name, value.zfill(10) if name == "batch_size" and value.isdigit() else value)
        for name, value in key.labels
    )
    return (key.kind, key.name, key.figure, labels)


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
    for key in sorted(by_series, key=_reading_order)[:SERIES_SHOWN]:
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


#: Models whose curves the page draws (the first by name).
CURVE_MODELS = 50


@dataclass(frozen=True, slots=True, order=True)
class CurveKey:
    """One configuration measured at several batch sizes (a batch-size curve)."""

    model: str
    variant: str
    hardware: str
    device_name: str
    precision: str
    is_simulated: bool
    #: What ran the model (a ``BenchmarkBackend`` value): torch and ONNX Runtime on
    #: the same CPU are two curves, never one with the newest of each size.
    backend: str = TORCH

    @property
    def label(self) -> str:
        simulated = ", simulated" if self.is_simulated else ""
        variant = "" if self.variant in ("", "default") else f", {self.variant}"
        backend = "" if self.backend == TORCH else f", {self.backend}"
        return f"{self.hardware} {self.device_name}, {self.precision}{variant}{backend}{simulated}"


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """One batch size's latest run: its figures, or the error it failed with."""

    batch_size: int
    throughput: float | None
    latency_ms: float | None
    error_class: str | None
    recorded_time: float

    @property
    def failed(self) -> bool:
        """It recorded an error or has no throughput: drawn as failed, never optimal."""
        return self.error_class is not None or self.throughput is None


@dataclass(frozen=True, slots=True)
class BatchCurve:
    key: CurveKey
    #: By batch size, smallest first.
    points: list[CurvePoint]
    optimal: CurvePoint | None

    def chart(self) -> dict[str, list[float | None]]:
        """The curve as uPlot's columns: batch sizes, throughput, latency (None: failed)."""
        return {
            "batch_size": [float(p.batch_size) for p in self.points],
            "throughput": [None if p.failed else p.throughput for p in self.points],
            "latency_ms": [None if p.failed else p.latency_ms for p in self.points],
        }


def optimal_batch(points: list[CurvePoint]) -> CurvePoint | None:
    """The batch size with the highest throughput; of equal ones the smallest
    (same speed for less memory); a failed batch size never; None if all failed."""
    measured = [p for p in points if not p.failed]
    if not measured:
        return None
    return max(measured, key=lambda p: (p.throughput or 0.0, -p.batch_size))


def _key(row: dict[str, Any]) -> CurveKey:
    return CurveKey(
        model=str(row["model"]),
        variant=str(row["variant"]),
        hardware=str(row["hardware"]),
        device_name=str(row["device_name"]),
        precision=str(row["precision"]),
        is_simulated=bool(row["is_simulated"]),
        backend=_backend(row),
    )


def _backend(row: Mapping[str, Any]) -> str:
    """A row's backend; rows from before schema version 10 were all torch's."""
    return str(row.get("backend") or TORCH)


def _figure(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def batch_curves(rows: list[dict[str, Any]]) -> list[BatchCurve]:
    """Group the latest-run-per-batch-size rows (``benchmark_compare``'s, each with
    its ``model``) into one curve per configuration, with its optimum.

    A configuration measured at one batch size only is still a curve (one
    point): the page says which size was measured, and a second size joins it
    when one is run. Rows repeating a batch size keep the newest."""
    grouped: dict[CurveKey, dict[int, CurvePoint]] = defaultdict(dict)
    for row in rows:
        point = CurvePoint(
            batch_size=int(row["batch_size"]),
            throughput=_figure(row.get("throughput_items_per_second")),
            latency_ms=_figure(row.get("latency_ms")),
            error_class=row.get("error_class"),
            recorded_time=float(row["recorded_time"]),
        )
        kept = grouped[_key(row)]
        older = kept.get(point.batch_size)
        if older is None or point.recorded_time >= older.recorded_time:
            kept[point.batch_size] = point
    curves = []
    for key in sorted(grouped):
        points = [grouped[key][size] for size in sorted(grouped[key])]
        curves.append(BatchCurve(key=key, points=points, optimal=optimal_batch(points)))
    return curves


# ---------------------------------------------------------------- one series' history

#: Runs one history chart draws (the newest).
HISTORY_RUNS = 500
_SELECTION_TEXT = ("model", "variant", "hardware", "device_name", "precision")


class BadSelection(Exception):
    """A history request's parameter is missing or not one the route takes (a 400 naming it)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


@dataclass(frozen=True, slots=True)
class SeriesSelection:
    """One benchmark series, as the page's series rows name it in their history link."""

    model: str
    variant: str
    hardware: str
    device_name: str
    precision: str
    batch_size: int
    is_simulated: bool
    #: Series of another backend than torch carry it in their labels (and link).
    backend: str = TORCH


def selection_from(params: Mapping[str, str]) -> SeriesSelection:
    """The series a ``/dashboard/benchmarks/history`` request names; every
    parameter is required (the row's link carries them all)."""
    text: dict[str, str] = {}
    for name in _SELECTION_TEXT:
        value = params.get(name)
        if value is None or not value.strip():
            raise BadSelection(name, "required: open the chart from a series row of the page")
        if len(value) > 200 or not value.isprintable():
            raise BadSelection(name, "give at most 200 printable characters")
        text[name] = value
    batch = params.get("batch_size", "")
    if not batch.isdigit() or len(batch) > 9 or int(batch) < 1:
        raise BadSelection("batch_size", f"{batch[:20]!r} is not a whole number from 1")
    simulated = params.get("is_simulated", "")
    if simulated not in ("true", "false"):
        raise BadSelection("is_simulated", f"{simulated[:20]!r} is not true or false")
    backend = params.get("backend", TORCH)
    if backend not in BACKEND_NAMES:
        raise BadSelection(
            "backend", f"{backend[:20]!r} is not one of {', '.join(sorted(BACKEND_NAMES))}"
        )
    return SeriesSelection(
        **text, batch_size=int(batch), is_simulated=simulated == "true", backend=backend
    )


def history_points(
    rows: list[dict[str, Any]], chosen: SeriesSelection
) -> list[dict[str, float | bool | None]]:
    """``benchmark_history``'s rows of ``chosen``'s model, batch size, precision and
    hardware, narrowed to its variant, device and real-or-simulated, as chart
    points, oldest first. A failed run is a point with no figures (a gap)."""
    points: list[dict[str, float | bool | None]] = []
    for row in rows:
        if (
            str(row["variant"]) != chosen.variant
            or str(row["device_name"]) != chosen.device_name
            or bool(row["is_simulated"]) != chosen.is_simulated
            or _backend(row) != chosen.backend
        ):
            continue
        failed = row.get("error_class") is not None
        points.append(
            {
                "t": float(row["recorded_time"]),
                "throughput_items_per_second": None
                if failed
                else _figure(row.get("throughput_items_per_second")),
                "latency_ms": None if failed else _figure(row.get("latency_ms")),
                "failed": failed,
            }
        )
    return points
