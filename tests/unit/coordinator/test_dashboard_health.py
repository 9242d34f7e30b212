"""The overview's coordinator health: commit-time and loop-lag summaries (pure),
the metrics that feed them (fake clock), and the overview fragment the page and
the event stream render, with the live firing-alert count."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from test_coordinator_state import Harness
from test_dashboard_views import T0
from test_metrics import EmptyView

from testfleet.coordinator.dashboard.feed import FeedKind
from testfleet.coordinator.dashboard.live import LiveSampler
from testfleet.coordinator.dashboard.templates import Templates
from testfleet.coordinator.dashboard.views import overview
from testfleet.coordinator.health import (
    COMMITS_KEPT,
    CoordinatorHealth,
    coordinator_health,
    percentile,
)
from testfleet.coordinator.metrics import Metrics
from testfleet.coordinator.state_view import StateView
from testfleet.domain.enums import TaskStatus
from testfleet.testing import FakeClock


def test_percentile_is_a_value_that_was_seen() -> None:
    values = [0.004, 0.001, 0.003, 0.002, 0.1]
    assert percentile(values, 0.5) == 0.003
    assert percentile(values, 0.95) == 0.1
    assert percentile(values, 0.0) == 0.001
    assert percentile(values, 1.0) == 0.1
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError, match="fraction must be within 0 and 1"):
        percentile(values, 95)


def test_health_summarises_the_newest_window_only() -> None:
    # An old slow commit falls out of the window; the last reading is the newest.
    commits = [9.0] + [0.002] * COMMITS_KEPT
    health = coordinator_health(commits, [0.0, 0.3, 0.01])
    assert health == CoordinatorHealth(
        commits=COMMITS_KEPT,
        commit_last=0.002,
        commit_median=0.002,
        commit_p95=0.002,
        loop_lag=0.01,
        loop_lag_max=0.3,
    )
    empty = coordinator_health([], [])
    assert empty.commits == 0
    assert empty.commit_median is None
    assert empty.loop_lag is None


async def test_metrics_keep_recent_commits_and_lag_readings_for_the_overview() -> None:
    clock = FakeClock()
    metrics = Metrics(clock, EmptyView(), lambda: 0)  # type: ignore[arg-type]
    for seconds in (0.001, 0.002, 0.010):
        metrics.observe_commit(seconds)
    probe = asyncio.create_task(metrics.probe_lag(interval=1.0))
    await asyncio.sleep(0)
    clock.advance(1.5)  # woken half a second late
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe
    health = metrics.health()
    assert (health.commits, health.commit_median, health.commit_last) == (3, 0.002, 0.010)
    assert health.loop_lag == pytest.approx(0.5)
    assert health.loop_lag_max == pytest.approx(0.5)


def render(**values: object) -> str:
    shown = overview([], [], 0, {}, T0, **values)  # type: ignore[arg-type]
    return Templates().render("_overview.html", o=shown, now=T0 + 60)


def test_the_overview_fragment_shows_commit_times_loop_lag_and_firing_alerts() -> None:
    health = coordinator_health([0.0005, 0.002, 0.004], [0.0, 0.75])
    html = render(firing_alerts=2, health=health)
    assert 'data-count="alerts-firing" class="state-firing">2 alerts firing</a>' in html
    assert 'href="alerts"' in html
    commit = html.split('data-health="commit"')[1].split("</div>\n  </div>")[0]
    assert "2.0 ms" in commit
    assert "p95 4.0 ms" in commit
    lag = html.split('data-health="loop-lag"')[0].rsplit("<div", 1)[1]
    assert "state-lost" in lag  # a loop three quarters of a second late is flagged
    assert "750.0 ms" in html.split('data-health="loop-lag"')[1]


def test_the_fragment_says_when_nothing_was_measured_yet() -> None:
    html = render(health=coordinator_health([], []))
    assert "no commits yet" in html
    assert "not measured yet" in html
    assert ">0 alerts firing</a>" in html
    assert 'data-health="commit"' not in render()  # no health source: no cards


class CountsOnly:
    def status_counts(self) -> dict[TaskStatus, int]:
        return {}


async def test_the_stream_sample_carries_the_live_alert_count_and_health() -> None:
    h = Harness()
    firing = [0]
    sampler = LiveSampler(
        StateView(h.state),
        CountsOnly(),  # type: ignore[arg-type]
        h.clock,
        Templates(),
        T0,
        lambda: 0,
        firing_alerts=lambda: firing[0],
        health=lambda: coordinator_health([0.003], [0.001]),
    )
    first = dict(await sampler.sample())[FeedKind.OVERVIEW]
    assert ">0 alerts firing</a>" in first
    assert "3.0 ms" in first
    firing[0] = 1
    second = dict(await sampler.sample())[FeedKind.OVERVIEW]
    assert 'class="state-firing">1 alert firing</a>' in second
