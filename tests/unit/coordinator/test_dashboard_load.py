"""Workers' recent load: the ring the state feeds, the sparkline's points, and
the rendered row (pure, fixed loads; the state through its own harness)."""

from __future__ import annotations

import pytest
from test_coordinator_state import Harness
from test_dashboard_views import T0, snapshot

from testfleet.coordinator.dashboard.sparklines import (
    HEIGHT,
    WIDTH,
    LoadFigure,
    polyline,
    sparkline,
)
from testfleet.coordinator.dashboard.templates import Templates
from testfleet.coordinator.dashboard.views import worker_row
from testfleet.coordinator.events import WorkerFrame
from testfleet.coordinator.load_history import LoadHistory, LoadPoint
from testfleet.protocol.messages import Heartbeat, WorkerLoad


def load(cpu: float, memory: float = 50.0, gpu: float | None = None) -> WorkerLoad:
    return WorkerLoad(
        cpu_percent=cpu,
        memory_percent=memory,
        gpu_utilization_percent=gpu,
        gpu_memory_percent=None if gpu is None else gpu / 2,
    )


def test_the_ring_keeps_the_newest_points_per_worker_oldest_first() -> None:
    history = LoadHistory(points=3)
    for i in range(5):
        history.record("w1", T0 + i, load(float(i)))
    assert [p.cpu_percent for p in history.recent("w1")] == [2.0, 3.0, 4.0]
    assert [p.time for p in history.recent("w1")] == [T0 + 2, T0 + 3, T0 + 4]
    assert history.recent("never") == []


def test_the_ring_forgets_the_worker_heard_from_least_recently() -> None:
    history = LoadHistory(points=2, workers=2)
    history.record("a", T0, load(1))
    history.record("b", T0, load(2))
    history.record("a", T0 + 1, load(3))  # a is now the most recent
    history.record("c", T0 + 2, load(4))
    assert history.recent("b") == []
    assert [p.cpu_percent for p in history.recent("a")] == [1.0, 3.0]
    assert history.recent("c")[0].cpu_percent == 4.0


def test_a_ring_with_no_room_is_refused() -> None:
    with pytest.raises(ValueError, match="points and workers must be >= 1"):
        LoadHistory(points=0)


def test_the_state_records_each_heartbeats_load_and_the_view_copies_it() -> None:
    h = Harness()
    h.connect(1, "w1")
    h.clock.advance(1)
    h.turn(WorkerFrame(1, Heartbeat(load=load(30, 40, gpu=90))))
    h.clock.advance(1)
    h.turn(WorkerFrame(1, Heartbeat(load=load(60, 41))))
    points = h.state.load_history.recent("w1")
    assert [(p.cpu_percent, p.gpu_utilization_percent) for p in points] == [(30, 90), (60, None)]
    assert points[1].time == h.clock.now()
    points.clear()  # a copy: the state's ring is untouched
    assert len(h.state.load_history.recent("w1")) == 2


def test_polyline_puts_the_newest_on_the_right_and_100_percent_at_the_top() -> None:
    assert polyline([0.0, 100.0], slots=3) == f"{WIDTH / 2:.1f},{HEIGHT:.1f} {WIDTH:.1f},0.0"
    # Out-of-range values are drawn at the edge; missing ones are skipped.
    assert polyline([150.0, None, -5.0], slots=3) == f"0.0,0.0 {WIDTH:.1f},{HEIGHT:.1f}"
    assert polyline([], slots=3) == ""


def test_a_sparkline_draws_gpu_lines_only_when_heartbeats_carry_them() -> None:
    cpu_only = [LoadPoint(T0 + i, 10.0 * i, 50.0) for i in range(4)]
    drawn = sparkline(cpu_only)
    assert drawn is not None
    assert [line.figure for line in drawn.lines] == [LoadFigure.CPU, LoadFigure.MEMORY]
    assert drawn.lines[0].latest == 30.0
    assert drawn.count == 4
    assert drawn.label == "last 4 heartbeats; now CPU 30 %, memory 50 %"
    gpu = [*cpu_only, LoadPoint(T0 + 9, 5.0, 60.0, 95.0, 40.0)]
    drawn = sparkline(gpu)
    assert drawn is not None
    assert [line.figure for line in drawn.lines] == list(LoadFigure)
    # The GPU line has only the one point that carried it.
    assert drawn.lines[2].points == f"{WIDTH:.1f},{HEIGHT - HEIGHT * 0.95:.1f}"
    assert sparkline([]) is None


def test_a_sparkline_draws_only_the_newest_slots() -> None:
    points = [LoadPoint(T0 + i, float(i), 0.0) for i in range(100)]
    drawn = sparkline(points, slots=10)
    assert drawn is not None
    assert drawn.count == 10
    assert drawn.lines[0].latest == 99.0


def test_the_workers_rows_render_the_sparkline_as_inline_svg() -> None:
    points = [LoadPoint(T0 + i, 20.0, 50.0, 80.0, 10.0) for i in range(3)]
    rows = [
        worker_row(snapshot("gpu-1"), 15.0, points),
        worker_row(snapshot("quiet-1"), 15.0),
    ]
    html = Templates().render("_worker_rows.html", rows=rows, base="/dashboard", now=T0 + 3)
    assert html.count('<svg class="spark"') == 1
    for figure in LoadFigure:
        assert f'class="spark-{figure.value}"' in html
    assert 'aria-label="last 3 heartbeats; now CPU 20 %, memory 50 %, GPU 80 %' in html
    # The worker not heard from since the start shows a dash, not an empty chart.
    quiet = html.split('data-worker="quiet-1"')[1]
    assert '<span class="quiet">-</span>' in quiet


def _worker_page(row: object) -> str:
    return Templates().render(
        "worker.html",
        w=row,
        tasks=[],
        failure_rate=None,
        draining=False,
        can_drain=False,
        csrf="",
        base="/dashboard",
        now=T0 + 3,
        page="worker.html",
    )


def test_the_worker_page_draws_the_same_sparkline_as_the_workers_list() -> None:
    points = [LoadPoint(T0 + i, 20.0, 50.0, 80.0, 10.0) for i in range(3)]
    row = worker_row(snapshot("gpu-1"), 15.0, points)
    page = _worker_page(row)
    listed = Templates().render("_worker_rows.html", rows=[row], base="/dashboard", now=T0 + 3)
    svg = page[page.index('<svg class="spark"') : page.index("</svg>") + len("</svg>")]
    assert page.count('<svg class="spark"') == 1
    assert svg in listed  # the very same drawing, not a look-alike
    assert 'data-points="3"' in svg
    for figure in LoadFigure:
        assert f'class="spark-{figure.value}"' in svg


def test_the_worker_page_of_a_worker_without_heartbeats_shows_a_dash() -> None:
    page = _worker_page(worker_row(snapshot("quiet-1"), 15.0))
    assert '<svg class="spark"' not in page
    load = page.split('<dd class="load">')[1]
    assert load.startswith('<span class="quiet">-</span>')
    assert "spark-key" not in load.split("</dd>")[0]  # no key beside a dash
