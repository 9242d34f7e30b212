"""The dashboard's log tail fragment, alerts page and benchmarks page.

On a real coordinator app over a seeded store (fake clock, the sign-in
cookie): the task page's poller, the fragment for a queued, a finished and an
unknown task and a bad ``after``; the fragment's rendering of a running
attempt's chunks (escaped, appended out of band, the next poller asking after
the last seq); stored and pending alerts with notifications and the
overview's count; and the benchmark series against their baselines and open
and resolved regressions (pure, on hand-made samples).
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from api_seed import Seeded, seed_store
from fastapi.testclient import TestClient

from testfleet.analysis.regressions import (
    Figure,
    Regression,
    RegressionStatus,
    Sample,
    SeriesKey,
    SeriesKind,
    find_regressions,
)
from testfleet.coordinator.app import create_app
from testfleet.coordinator.dashboard.benchmarks import series_rows, split_regressions
from testfleet.coordinator.dashboard.templates import Templates
from testfleet.coordinator.log_api import LogChunkView, TaskLog
from testfleet.domain.alerts import (
    AlertRecord,
    AlertRule,
    AlertState,
    NotificationRecord,
    NotificationStatus,
    Severity,
)
from testfleet.domain.enums import TaskStatus
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.tokens import Role
from testfleet.store import Store
from testfleet.testing import FakeClock

T0 = 1_800_000_000.0
HTML = {"Accept": "text/html,application/xhtml+xml"}


@dataclass
class Site:
    client: TestClient
    seeded: Seeded


def _alert(alert_id: str, state: AlertState, summary: str) -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id,
        rule=AlertRule.QUEUE_STUCK,
        labels={"priority": "5"},
        severity=Severity.WARNING,
        state=state,
        summary=summary,
        value=700.0,
        pending_since=T0,
        fired_at=T0,
        resolved_at=T0 + 60 if state is AlertState.RESOLVED else None,
        last_seen=T0,
    )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    path = tmp_path / "dash.duckdb"
    seeded = seed_store(path)
    with Store(path) as store:
        store.save_alerts(
            [
                _alert("a-fire", AlertState.FIRING, "queue <b>stuck</b>"),
                _alert("a-old", AlertState.RESOLVED, "was stuck"),
            ]
        )
        store.record_notifications(
            [
                NotificationRecord(
                    "a-fire",
                    "ops-hook",
                    AlertState.FIRING,
                    NotificationStatus.FAILED,
                    3,
                    T0,
                    error="connection refused",
                )
            ]
        )
    secret = create_token_in_file(path, "viewer", Role.VIEWER, now=T0).secret
    with TestClient(create_app(path, clock=FakeClock(T0 + 120))) as client:
        signed = client.post("/dashboard/login", data={"token": secret}, follow_redirects=False)
        assert signed.status_code == 303, signed.text
        yield Site(client, seeded)


# ------------------------------------------------------------------ log tail


def test_the_task_page_polls_its_log_tail(site: Site) -> None:
    page = site.client.get(f"/dashboard/tasks/{site.seeded.queued_task}", headers=HTML)
    assert page.status_code == 200
    assert 'id="log-text"' in page.text
    assert f'hx-get="/dashboard/tasks/{site.seeded.queued_task}/log?after=0"' in page.text


def test_a_queued_tasks_fragment_keeps_polling_with_no_output(site: Site) -> None:
    answer = site.client.get(f"/dashboard/tasks/{site.seeded.queued_task}/log?after=0")
    assert answer.status_code == 200, answer.text
    assert "Not running yet" in answer.text
    assert 'hx-trigger="every 1s"' in answer.text
    assert "hx-swap-oob" not in answer.text  # nothing to append


def test_a_finished_tasks_fragment_shows_its_stored_log_and_stops(site: Site) -> None:
    answer = site.client.get(f"/dashboard/tasks/{site.seeded.completed_task}/log")
    assert answer.status_code == 200, answer.text
    assert '<pre id="log-text" class="log" hx-swap-oob="true">' in answer.text
    assert "hx-get" not in answer.text  # no more polling
    assert 'data-finished="true"' in answer.text
    assert "completed" in answer.text


def test_unknown_tasks_and_bad_after_are_4xx_naming_the_problem(site: Site) -> None:
    missing = site.client.get("/dashboard/tasks/nope/log")
    assert missing.status_code == 404
    assert "No task with id nope" in missing.text
    for bad in ("-1", "x", "9" * 30):
        answer = site.client.get(f"/dashboard/tasks/{site.seeded.queued_task}/log?after={bad}")
        assert answer.status_code == 400, bad
        assert "after:" in html.unescape(answer.text)


def test_the_log_fragment_needs_a_viewer(site: Site) -> None:
    site.client.cookies.clear()
    answer = site.client.get(f"/dashboard/tasks/{site.seeded.queued_task}/log")
    assert answer.status_code == 401


def _running(chunks: list[tuple[int, str]], *, missed: bool = False) -> TaskLog:
    return TaskLog(
        task_id="t/1",
        status=TaskStatus.RUNNING,
        attempt_id=7,
        worker_id="w1",
        running=True,
        finished=False,
        chunks=[LogChunkView(seq=s, data=d, received_at=None) for s, d in chunks],
        next_after=chunks[-1][0] if chunks else 0,
        missed=missed,
        final_log=None,
    )


def test_a_running_attempts_chunks_are_escaped_appended_and_followed() -> None:
    text = Templates().render(
        "_log_tail.html",
        base="/dashboard",
        now=T0,
        log=_running([(4, "line 1\n"), (5, "<script>alert(1)</script>\n")], missed=True),
        after=3,
    )
    assert 'hx-swap-oob="beforeend:#log-text"' in text
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert 'data-seq="4">line 1\n</span>' in text
    assert "earlier output dropped" in text
    assert 'hx-get="/dashboard/tasks/t/1/log?after=5"' in text
    assert "Running on w1; following its output." in text


# -------------------------------------------------------------------- alerts


def test_the_alerts_page_lists_firing_resolved_and_notifications(site: Site) -> None:
    page = site.client.get("/dashboard/alerts", headers=HTML)
    assert page.status_code == 200, page.text
    assert 'data-alert="a-fire"' in page.text
    assert 'data-alert="a-old"' in page.text
    assert "queue &lt;b&gt;stuck&lt;/b&gt;" in page.text  # escaped
    assert "1 firing" in page.text
    assert "ops-hook" in page.text
    assert "connection refused" in page.text
    assert page.text.index('data-alert="a-fire"') < page.text.index('data-alert="a-old"')
    assert 'href="/dashboard/alerts" class="current"' in page.text


def test_the_overview_links_the_firing_count_to_the_alerts_page(site: Site) -> None:
    page = site.client.get("/dashboard/", headers=HTML)
    assert page.status_code == 200
    assert 'data-count="alerts-firing" class="state-firing">1 alert firing</a>' in page.text


def test_the_overview_shows_the_coordinators_commit_time_and_loop_lag(site: Site) -> None:
    page = site.client.get("/dashboard/", headers=HTML)
    assert 'data-health="commit"' in page.text
    assert 'data-health="loop-lag"' in page.text


# ---------------------------------------------------------------- benchmarks


def test_the_benchmarks_page_lists_the_seeded_series(site: Site) -> None:
    page = site.client.get("/dashboard/benchmarks", headers=HTML)
    assert page.status_code == 200, page.text
    assert site.seeded.model in page.text
    assert "No open regressions." in page.text


KEY = SeriesKey(SeriesKind.BENCHMARK, "resnet", Figure.THROUGHPUT, (("hardware", "a100"),))


def _samples(values: list[float]) -> list[Sample]:
    return [Sample(KEY, T0 + i, v, order=i) for i, v in enumerate(values)]


def test_a_series_shows_its_latest_run_against_the_median_before_it() -> None:
    samples = _samples([100.0, 102.0, 98.0, 101.0, 90.0])
    tests = [Sample(SeriesKey(SeriesKind.TEST, "t::a", Figure.TEST_DURATION), T0, 1.0)]
    (row,) = series_rows(samples + tests, [])
    assert (row.runs, row.latest, row.latest_time) == (5, 90.0, T0 + 4)
    assert row.baseline == pytest.approx(100.5)
    assert row.change_percent == pytest.approx(-10.4477, rel=1e-3)
    assert row.label == "hardware=a100"
    assert not row.regressed
    (lone,) = series_rows(_samples([5.0]), [])
    assert lone.baseline is None
    assert lone.change_percent is None


def test_open_regressions_mark_their_series_and_resolved_ones_are_listed_newest_first() -> None:
    regressed = _samples([100.0, 101.0, 99.0, 100.0, 100.0, 100.0, 60.0, 61.0])
    found = find_regressions(regressed, include_resolved=True)
    assert [r.status for r in found] == [RegressionStatus.OPEN]
    (row,) = series_rows(regressed, found)
    assert row.regressed
    old = Regression(KEY, RegressionStatus.RESOLVED, 100, 1, T0, T0, 60, 2, resolved=T0 + 10)
    new = Regression(KEY, RegressionStatus.RESOLVED, 100, 1, T0, T0, 60, 2, resolved=T0 + 20)
    open_ones, resolved = split_regressions([*found, old, new])
    assert open_ones == found
    assert resolved == [new, old]
