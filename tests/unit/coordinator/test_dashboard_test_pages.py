"""The dashboard's Test runs and Tests pages, and the flaky-tests gauge.

A project's history written through the real store (five runs of one
project, the last still running), then: the pure views on fixed numbers (the
ETA, chunks per worker, the new / failing since / flaky classification), the
store's queries over that history (run summaries, verdicts of earlier runs,
per-test statistics, the flaky count in a window), and the pages on a real
coordinator app (fake clock, the sign-in cookie): the run list, a finished
run's classified failures and slowest tests, a running run's polled body with
its ETA, the tests page's strip, bad filters and unknown runs, and
``testfleet_flaky_tests`` in ``/metrics`` parsed by prometheus-client.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from testfleet.coordinator.app import create_app
from testfleet.coordinator.dashboard.test_runs import (
    FailureKind,
    classify,
    eta,
    worker_chunks,
)
from testfleet.coordinator.flaky_tests_metric import FLAKY_WINDOW_SECONDS
from testfleet.domain.enums import (
    AttemptStatus,
    HardwareKind,
    TaskStatus,
    TaskType,
    WorkerStatus,
)
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.pytest_tasks import (
    PhaseReport,
    ReportOutcome,
    TestLocation,
    TestOutcome,
    TestPhase,
    TestRecord,
    TestResultRow,
)
from testfleet.domain.records import AttemptRecord, TaskRecord, WorkerRecord, WriteBatch
from testfleet.domain.task import TaskSpec
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.tokens import Role
from testfleet.store import Store
from testfleet.store.test_history_queries import ChunkRow, PastVerdict, RunTest
from testfleet.testing import FakeClock

T0 = 1_800_000_000.0
PROJECT = "path:/srv/app"
HTML = {"Accept": "text/html,application/xhtml+xml"}
P, F = TestOutcome.PASSED, TestOutcome.FAILED

# Verdicts per run (first pass, and the rerun's when there is one):
# a: passes three times, then fails: new in run-4.
# b: fails every time: failing since run-1.
# c: pass, fail, pass, fail: flaky (flips).
# d: passed on a rerun in run-2 and again in run-4: flaky.
# e: fails in run-1 and run-2, absent from run-3, fails in run-4: new (absence breaks).
HISTORY: dict[str, dict[str, list[TestOutcome]]] = {
    "run-1": {"a": [P], "b": [F], "c": [P], "d": [P], "e": [F]},
    "run-2": {"a": [P], "b": [F], "c": [F], "d": [F, P], "e": [F]},
    "run-3": {"a": [P], "b": [F], "c": [P], "d": [P]},
    "run-4": {"a": [F], "b": [F], "c": [F], "d": [F, P], "e": [F]},
}
#: The running run: chunk 1 (a passes, b fails) done on w-1, chunk 2 (c, d, e) running on w-2.
RUNNING = "run-5"


def _record(nodeid: str, outcome: TestOutcome) -> TestRecord:
    call = ReportOutcome.PASSED if outcome is P else ReportOutcome.FAILED
    return TestRecord(
        nodeid=nodeid,
        location=TestLocation(path="t.py", lineno=1, domain=nodeid),
        phases=[PhaseReport(when=TestPhase.CALL, outcome=call, duration=0.1)],
    )


class _Writer:
    """Writes chunks and their tests through the real store, with fresh ids."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.attempt = 0
        self.seq = 0

    def chunk(
        self,
        run_id: str,
        task_id: str,
        worker: str,
        at: float,
        tests: dict[str, TestOutcome],
        *,
        rerun: int = 0,
        nodes: list[str] | None = None,
        running: bool = False,
    ) -> None:
        self.attempt += 1
        spec = TaskSpec(
            task_id=task_id,
            type=TaskType.TEST,
            config={
                "run_id": run_id,
                "project": {"path": "/srv/app"},
                "node_ids": nodes if nodes is not None else [f"t.py::{n}" for n in tests],
                "rerun": rerun,
            },
        )
        end = None if running else at + 5
        status = TaskStatus.RUNNING if running else TaskStatus.COMPLETED
        rows = []
        for offset, (name, outcome) in enumerate(tests.items()):
            self.seq += 1
            rows.append(
                TestResultRow(
                    seq=self.seq,
                    task_id=task_id,
                    nodeid=f"t.py::{name}",
                    attempt_id=self.attempt,
                    worker_id=worker,
                    run_id=run_id,
                    project=PROJECT,
                    rerun=rerun,
                    outcome=outcome,
                    duration_seconds=1.0 + offset,
                    crashed=False,
                    recorded_time=at + 1 + offset,
                    record=_record(f"t.py::{name}", outcome),
                )
            )
        self.store.write(
            WriteBatch(
                tasks=[
                    TaskRecord(
                        spec,
                        status,
                        at,
                        at,
                        start_time=at + 1,
                        end_time=end,
                        worker_id=worker,
                        attempts=1,
                    )
                ],
                attempts=[
                    AttemptRecord(
                        self.attempt,
                        task_id,
                        worker,
                        1,
                        AttemptStatus.RUNNING if running else AttemptStatus.COMPLETED,
                        at + 1,
                        at + 1,
                        end,
                    )
                ],
                test_rows=rows,
            )
        )


def seed_history(path: Path) -> None:
    """The history the module's ``HISTORY`` table describes, one run a minute."""
    capabilities = WorkerCapabilities(
        hostname="box",
        os="Linux",
        python_version="3.12",
        memory_gb=8.0,
        hardware=[HardwareKind.CPU],
        task_types=list(TaskType),
    )
    with Store(path) as store:
        store.write(
            WriteBatch(
                workers=[
                    WorkerRecord(w, "box", T0, T0, WorkerStatus.DISCONNECTED, capabilities, 2, {})
                    for w in ("w-1", "w-2")
                ]
            )
        )
        writer = _Writer(store)
        for n, (run_id, verdicts) in enumerate(HISTORY.items()):
            at = T0 + 60 * n
            first = {name: outcomes[0] for name, outcomes in verdicts.items()}
            writer.chunk(run_id, f"{run_id}-c1", "w-1", at, first)
            reruns = {name: outcomes[1] for name, outcomes in verdicts.items() if len(outcomes) > 1}
            if reruns:
                writer.chunk(run_id, f"{run_id}-r1", "w-2", at + 10, reruns, rerun=1)
        at = T0 + 600
        writer.chunk(RUNNING, f"{RUNNING}-c1", "w-1", at, {"a": P, "b": F})
        writer.chunk(
            RUNNING,
            f"{RUNNING}-c2",
            "w-2",
            at,
            {},
            nodes=["t.py::c", "t.py::d", "t.py::e"],
            running=True,
        )


# ------------------------------------------------------------------ pure views


def test_eta_is_unknown_until_a_test_is_done_then_follows_the_rate() -> None:
    assert eta(total=100, done=0, started=T0, now=T0 + 30) is None
    assert eta(total=100, done=10, started=T0, now=T0) is None
    # 25 tests in 50 s: 75 more take 150 s.
    assert eta(total=100, done=25, started=T0, now=T0 + 50) == pytest.approx(150.0)
    assert eta(total=100, done=100, started=T0, now=T0 + 50) == 0.0
    assert eta(total=0, done=0, started=T0, now=T0 + 50) is None


def test_chunks_per_worker_count_running_ones_and_span_their_times() -> None:
    chunks = [
        ChunkRow("c1", "completed", "w-1", T0, T0 + 5, 0, 10, 10),
        ChunkRow("c2", "running", "w-1", T0 + 6, None, 0, 10, 3),
        ChunkRow("c3", "completed", "w-2", T0 + 1, T0 + 9, 0, 10, 10),
        ChunkRow("c4", "queued", None, None, None, 0, 10, 0),
    ]
    rows = worker_chunks(chunks)
    assert [(r.worker_id, r.chunks, r.running, r.tests_reported) for r in rows] == [
        ("w-1", 2, 1, 13),
        ("w-2", 1, 0, 10),
    ]
    assert (rows[0].first_start, rows[0].last_end) == (T0, T0 + 5)
    assert [c.task_id for c in rows[0].items] == ["c1", "c2"]


def _past(run: str, outcome: TestOutcome, *, rerun: bool = False) -> PastVerdict:
    return PastVerdict("t", run, T0, outcome, rerun)


FAILING = RunTest("t", F, 1.0, 0, "w-1")


def test_a_failure_after_a_pass_or_an_absence_is_new() -> None:
    runs = ["r3", "r2", "r1"]
    assert classify(FAILING, runs, [_past("r3", P)]).kind is FailureKind.NEW
    assert classify(FAILING, runs, []).kind is FailureKind.NEW
    # Failed in r2, but absent from r3, the run just before.
    assert classify(FAILING, runs, [_past("r2", F)]).kind is FailureKind.NEW


def test_consecutive_failures_name_the_run_they_began_in() -> None:
    found = classify(FAILING, ["r3", "r2", "r1"], [_past("r3", F), _past("r2", F), _past("r1", P)])
    assert found.kind is FailureKind.FAILING_SINCE
    assert (found.since_run, found.streak) == ("r2", 3)


def test_flips_or_a_pass_on_rerun_make_a_test_flaky() -> None:
    runs = ["r3", "r2", "r1"]
    flipping = [_past("r3", P), _past("r2", F), _past("r1", P)]
    assert classify(FAILING, runs, flipping).kind is FailureKind.FLAKY
    assert classify(FAILING, runs, [_past("r3", P, rerun=True)]).kind is FailureKind.FLAKY
    passed_on_rerun = RunTest("t", P, 1.0, 1, "w-1")
    assert classify(passed_on_rerun, runs, []).kind is FailureKind.FLAKY


# ------------------------------------------------------------------ store


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    path = tmp_path / "history.duckdb"
    seed_history(path)
    return path


def test_run_summaries_count_totals_verdicts_and_open_chunks(seeded: Path) -> None:
    with Store(seeded) as store:
        runs = store.recent_runs()
        assert [r.run_id for r in runs] == ["run-5", "run-4", "run-3", "run-2", "run-1"]
        four = store.run_summary("run-4")
        assert four is not None
        assert not four.running
        # d failed then passed on its rerun: counted once, as passed on rerun.
        assert (four.total, four.done, four.failed, four.passed_on_rerun) == (5, 5, 4, 1)
        five = runs[0]
        assert five.running
        assert five.ended is None
        assert (five.total, five.done, five.failed) == (5, 2, 1)
        assert store.run_summary("nope") is None
        assert store.recent_runs(project="path:/elsewhere") == []
        assert store.earlier_runs("run-4", PROJECT) == ["run-3", "run-2", "run-1"]


def test_per_test_statistics_over_recent_runs(seeded: Path) -> None:
    with Store(seeded) as store:
        stats = {s.nodeid: s for s in store.per_test_stats(PROJECT)}
        c = stats["t.py::c"]
        assert (c.runs, c.passed, c.failed, c.flips) == (4, 2, 2, 3)
        assert c.pass_rate == 0.5
        assert [outcome for _run, outcome, _r, _d in c.recent] == [F, P, F, P]
        assert stats["t.py::d"].passed_on_rerun == 2
        assert stats["t.py::b"].flips == 0
        assert stats["t.py::b"].pass_rate == 0.0
        assert stats["t.py::a"].runs == 5  # run-5 recorded it already
        # The flakiest first; a bounded window of runs per test.
        assert next(iter(stats)) == "t.py::c"
        assert all(s.runs <= 2 for s in store.per_test_stats(PROJECT, runs=2))
        assert [s.nodeid for s in store.per_test_stats(PROJECT, contains="::e")] == ["t.py::e"]


def test_flaky_tests_are_counted_within_the_window(seeded: Path) -> None:
    with Store(seeded) as store:
        # a (passed, then failed), c (flips), d (passed on rerun); b and e never passed.
        assert store.count_flaky_tests(T0) == 3
        # From run-4 on: d passed on a rerun; a passed in run-5 after failing in run-4.
        assert store.count_flaky_tests(T0 + 180) == 2
        assert store.count_flaky_tests(T0 + 10_000) == 0


# ------------------------------------------------------------------ pages


@dataclass
class Site:
    client: TestClient
    clock: FakeClock
    token: str


@pytest.fixture
def site(seeded: Path) -> Iterator[Site]:
    secret = create_token_in_file(seeded, "viewer", Role.VIEWER, now=T0).secret
    clock = FakeClock(T0 + 620)
    with TestClient(create_app(seeded, clock=clock)) as client:
        signed = client.post("/dashboard/login", data={"token": secret}, follow_redirects=False)
        assert signed.status_code == 303, signed.text
        yield Site(client, clock, secret)


def test_the_run_list_shows_progress_and_failures_newest_first(site: Site) -> None:
    page = site.client.get("/dashboard/runs", headers=HTML)
    assert page.status_code == 200, page.text
    text = page.text
    assert text.index("run-5") < text.index("run-4") < text.index("run-1")
    assert 'class="run-running"' in text
    assert "2 / 5" in text
    assert 'href="/dashboard/runs" class="current"' in text  # the nav link
    assert 'href="/dashboard/tests"' in text


def test_a_finished_run_classifies_its_failures(site: Site) -> None:
    page = site.client.get("/dashboard/runs/run-4", headers=HTML)
    assert page.status_code == 200, page.text
    text = html.unescape(page.text)
    assert "hx-get" not in text  # finished: nothing polls
    rows = {
        line.split("<code>")[1].split("</code>")[0]: line
        for line in text.split('<tr class="kind-')[1:]
    }
    assert rows["t.py::a"].startswith("new")
    assert rows["t.py::b"].startswith("failing_since")
    assert "run-1" in rows["t.py::b"]
    assert "4 runs" in rows["t.py::b"]
    assert rows["t.py::c"].startswith("flaky")
    assert rows["t.py::d"].startswith("flaky")
    assert "(rerun 1)" in rows["t.py::d"]
    assert rows["t.py::e"].startswith("new")
    assert "Slowest tests" in text
    assert "ETA" not in text


def test_a_running_run_polls_its_body_with_an_eta(site: Site) -> None:
    page = site.client.get("/dashboard/runs/run-5", headers=HTML)
    assert page.status_code == 200, page.text
    assert 'hx-get="/dashboard/runs/run-5/live"' in page.text
    assert 'hx-trigger="every 2s"' in page.text
    # 2 of 5 in 20 s since the run began: 3 more take 30 s.
    assert "<dd data-eta>30.0 s</dd>" in page.text
    assert "Failing tests" not in page.text
    live = site.client.get("/dashboard/runs/run-5/live")
    assert live.status_code == 200
    assert 'id="run-body"' in live.text
    assert "<html" not in live.text
    assert "w-2" in live.text  # chunks per worker
    assert 'href="/dashboard/tasks/run-5-c2"' in live.text  # and each worker's chunks


def test_unknown_runs_are_404_and_bad_filters_400(site: Site) -> None:
    missing = site.client.get("/dashboard/runs/nope", headers=HTML)
    assert missing.status_code == 404
    assert "No test run 'nope'" in html.unescape(missing.text)
    bad = site.client.get("/dashboard/tests?q=%01", headers=HTML)
    assert bad.status_code == 400
    assert "q: give at most" in bad.text
    assert site.client.get("/dashboard/runs?project=" + "x" * 5000).status_code == 400


def test_the_tests_page_shows_rates_flips_and_a_strip(site: Site) -> None:
    page = site.client.get("/dashboard/tests", headers=HTML)
    assert page.status_code == 200, page.text
    text = page.text
    assert f"<option selected>{PROJECT}</option>" in text
    assert text.index("t.py::c") < text.index("t.py::b")  # flakiest first
    assert 'class="cell outcome-rerun"' in text  # d passed on a rerun
    assert 'href="/dashboard/runs/run-2"' in text
    other = site.client.get("/dashboard/tests?project=path:/none", headers=HTML)
    assert other.status_code == 200
    assert "No tests recorded for this project" in other.text


def test_the_pages_need_a_credential(seeded: Path) -> None:
    with TestClient(create_app(seeded, clock=FakeClock(T0))) as client:
        for path in ("/dashboard/runs", "/dashboard/runs/run-4", "/dashboard/tests"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers=HTML, follow_redirects=False).status_code == 303


def test_metrics_expose_the_flaky_tests_gauge(site: Site) -> None:
    def flaky() -> float:
        answer = site.client.get("/metrics", headers={"Authorization": f"Bearer {site.token}"})
        assert answer.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(answer.text)}
        return families["testfleet_flaky_tests"].samples[0].value

    assert flaky() == 3
    # A day later the window holds none of them (once the figure is recounted).
    site.clock.advance(FLAKY_WINDOW_SECONDS)
    assert flaky() == 0
