"""A worker's recent load as a tiny server-rendered SVG line chart.

Callers: :func:`.views.worker_row` builds one per worker from the state
view's :meth:`~testfleet.coordinator.state_view.StateView.load_history`, and
``_worker_rows.html`` draws it as inline SVG: no script, so the line comes
back with the row fragment every time the rows refresh. Pure: the points are
numbers in, text out, and the unit tests check them on fixed loads.

Every line is a percentage, so the y scale is fixed at 0-100 (a line at the
top is a full machine, whatever else is on the chart). The x axis is the
ring's slots, newest at the right edge: a worker heard from for ten
heartbeats draws a short line ending on the right, not one stretched wide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from testfleet.coordinator.load_history import POINTS, LoadPoint

#: The drawing's size in SVG units (the CSS may scale it).
WIDTH = 120
HEIGHT = 24


class LoadFigure(StrEnum):
    """The lines a sparkline can draw (their CSS classes: ``spark-<value>``)."""

    CPU = "cpu"
    MEMORY = "memory"
    GPU = "gpu"
    GPU_MEMORY = "gpu-memory"


@dataclass(frozen=True, slots=True)
class SparkLine:
    figure: LoadFigure
    #: An SVG ``points`` attribute: "x,y x,y ...".
    points: str
    #: The newest value (percent), for the label.
    latest: float


@dataclass(frozen=True, slots=True)
class Sparkline:
    lines: list[SparkLine]
    #: Heartbeats drawn.
    count: int

    @property
    def label(self) -> str:
        """What the chart shows, in words (its ``aria-label`` and tooltip)."""
        names = {
            LoadFigure.CPU: "CPU",
            LoadFigure.MEMORY: "memory",
            LoadFigure.GPU: "GPU",
            LoadFigure.GPU_MEMORY: "GPU memory",
        }
        now = ", ".join(f"{names[line.figure]} {line.latest:.0f} %" for line in self.lines)
        return f"last {self.count} heartbeats; now {now}"


def _values(points: Sequence[LoadPoint], figure: LoadFigure) -> list[float | None]:
    match figure:
        case LoadFigure.CPU:
            return [p.cpu_percent for p in points]
        case LoadFigure.MEMORY:
            return [p.memory_percent for p in points]
        case LoadFigure.GPU:
            return [p.gpu_utilization_percent for p in points]
        case LoadFigure.GPU_MEMORY:
            return [p.gpu_memory_percent for p in points]


def polyline(values: Sequence[float | None], slots: int = POINTS) -> str:
    """``values`` (percent, oldest first) as SVG points: the newest on the right
    edge, one slot apart, 0 % at the bottom and 100 % at the top. A value past
    either end is drawn at that end (CPU percent can pass 100 on some systems);
    a missing value (None) is skipped."""
    step = WIDTH / max(slots - 1, 1)
    first = WIDTH - step * (len(values) - 1)
    out = []
    for i, value in enumerate(values):
        if value is None:
            continue
        clamped = min(100.0, max(0.0, value))
        x = first + step * i
        y = HEIGHT - HEIGHT * clamped / 100.0
        out.append(f"{x:.1f},{y:.1f}")
    return " ".join(out)


def sparkline(points: Sequence[LoadPoint], slots: int = POINTS) -> Sparkline | None:
    """The worker's CPU and memory lines, and its GPU lines where its heartbeats
    carry them; None before its first heartbeat. Only the newest ``slots``
    points are drawn."""
    points = list(points)[-slots:]
    if not points:
        return None
    lines = []
    for figure in LoadFigure:
        values = _values(points, figure)
        latest = next((v for v in reversed(values) if v is not None), None)
        if latest is None:
            continue  # a worker without GPUs has no GPU lines
        lines.append(SparkLine(figure, polyline(values, slots), latest))
    return Sparkline(lines=lines, count=len(points))
