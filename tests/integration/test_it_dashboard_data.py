"""The dashboard's data pages in a real browser, with data in them: Debian's
chromium driven by Playwright (the ``browser`` fixture and :class:`Browser` of
test_it_dashboard.py) against a real fleet on loopback (TLS, tokens).

* Benchmarks: a benchmark history is written into the fleet's DuckDB file
  through the real store before the coordinator starts (one model, hardware
  and precision at five batch sizes, ten runs a day apart, the largest size
  out of memory every time, one size stepping down for the last three runs).
  In chromium the batch-size curve is drawn by ``benchmarks.js`` with the
  batch sizes as its x data, the optimum is the size whose *latest* run is
  fastest, the failed size shows as failed, the step down is an open
  regression, and clicking a series row draws its history with one point per
  stored run.
* Test runs: a generated suite with a failing test and a flaky one (fails
  once, passes on its rerun) goes through ``testfleet run``; the run's page
  follows it while it runs and, once it finished (no reload), shows done of
  total, the failing test marked new and the flaky one flaky; the Tests page
  lists them with their strips; a worker's own page draws its load sparkline.

Every request stays on 127.0.0.1 and no page logs a console error;
screenshots land under the test's tmp dir, ``screenshots/``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet

# The ``browser`` fixture (chromium, recording every request and console error):
# imported to be registered here; the tests take it as a parameter (F811).
from test_it_dashboard import (
    WAIT_MS,
    Browser,
    browser,  # noqa: F401
    sign_in,
    viewer_secret,
)

from testfleet.domain.benchmark import BenchmarkRow
from testfleet.domain.enums import (
    AttemptStatus,
    HardwareKind,
    TaskStatus,
    TaskType,
    WorkerStatus,
)
from testfleet.domain.hardware import GpuInfo, WorkerCapabilities
from testfleet.domain.records import AttemptRecord, TaskRecord, WorkerRecord, WriteBatch
from testfleet.domain.task import TaskSpec
from testfleet.store import Store

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = [pytest.mark.integration, pytest.mark.slow]

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')"
)

# ------------------------------------------------------------------ benchmarks

MODEL = "bert-base-uncased"
BENCH_WORKER = "bench-box"
RUNS = 10
DAY = 86_400.0
#: Latest-run throughput per batch size (items/s); 64 ran out of memory.
THROUGHPUT = {1: 100.0, 8: 700.0, 16: 1600.0, 32: 3000.0}
FAILED_SIZE = 64
#: Batch 32 falls to this for the last STEP_RUNS runs: a sustained step down,
#: below batch 16's figure, so the optimum of the latest runs is 16, not 32.
STEP_SIZE, STEP_THROUGHPUT, STEP_RUNS = 32, 1500.0, 3
OPTIMAL = 16
SIZES = sorted([*THROUGHPUT, FAILED_SIZE])


def _throughput(size: int, run: int) -> float:
    if size == STEP_SIZE and run >= RUNS - STEP_RUNS:
        return STEP_THROUGHPUT
    # A little run-to-run noise, so the detector's noise estimate is not zero.
    return THROUGHPUT[size] * (1.0 + 0.005 * (run % 3 - 1))


def _row(attempt_id: int, task_id: str, size: int, run: int, at: float) -> BenchmarkRow:
    failed = size == FAILED_SIZE
    throughput = None if failed else _throughput(size, run)
    latency = None if throughput is None else 1000.0 * size / throughput
    return BenchmarkRow(
        attempt_id=attempt_id,
        batch_size=size,
        task_id=task_id,
        worker_id=BENCH_WORKER,
        recorded_time=at,
        model=MODEL,
        variant="seq=128",
        hardware="cuda",
        device_name="NVIDIA H200",
        precision="fp16",
        is_simulated=False,
        latency_ms=latency,
        latency_p50_ms=latency,
        latency_p90_ms=None if latency is None else latency * 1.1,
        latency_p99_ms=None if latency is None else latency * 1.2,
        throughput_items_per_second=throughput,
        memory_mb=None if failed else 100.0 * size,
        error_class="out_of_memory" if failed else None,
        error_message="CUDA out of memory" if failed else None,
        torch_version="2.5.1",
        transformers_version="4.46.0",
        load_note=None,
    )


def seed_benchmarks(db: Path, now: float) -> None:
    """RUNS benchmark tasks a day apart, ending an hour before ``now``, written
    through the real store as the coordinator would have recorded them."""
    start = now - 3600 - (RUNS - 1) * DAY
    capabilities = WorkerCapabilities(
        hostname="bench-box.lab",
        os="Linux",
        python_version="3.11.7",
        memory_gb=512.0,
        gpus=[GpuInfo(index=0, vendor="nvidia", name="NVIDIA H200", memory_gb=141.0)],
        hardware=[HardwareKind.CPU, HardwareKind.CUDA],
        task_types=list(TaskType),
    )
    worker = WorkerRecord(
        BENCH_WORKER, "bench-box.lab", start, start, WorkerStatus.DISCONNECTED, capabilities, 1
    )
    with Store(db) as store:
        store.write(WriteBatch(workers=[worker]))
        for run in range(RUNS):
            at = start + run * DAY
            task_id = f"bench-{run:02d}"
            attempt_id = 1000 + run
            spec = TaskSpec(
                task_id=task_id,
                type=TaskType.BENCHMARK,
                requirements={"hardware": [HardwareKind.CUDA]},
                config={"model": MODEL, "batch_sizes": SIZES, "precision": "fp16"},
            )
            store.write(
                WriteBatch(
                    tasks=[
                        TaskRecord(
                            spec,
                            TaskStatus.COMPLETED,
                            at - 60,
                            at - 60,
                            start_time=at - 50,
                            end_time=at,
                            worker_id=BENCH_WORKER,
                            attempts=1,
                            current_attempt_id=attempt_id,
                        )
                    ],
                    attempts=[
                        AttemptRecord(
                            attempt_id,
                            task_id,
                            BENCH_WORKER,
                            1,
                            AttemptStatus.COMPLETED,
                            at - 50,
                            at - 50,
                            at,
                        )
                    ],
                    benchmark_rows=[_row(attempt_id, task_id, s, run, at) for s in SIZES],
                )
            )


def _series_row(page: Page, size: int, figure: str) -> Locator:
    return page.locator(f"tr.series-row[data-figure='{figure}']", has_text=f"batch_size={size},")


@pytest.mark.timeout(180)
def test_the_benchmarks_page_draws_curves_optimum_failures_and_history_in_a_browser(
    fleet: Fleet,
    browser: Browser,  # noqa: F811
) -> None:
    seed_benchmarks(fleet.db, time.time())
    fleet.start_coordinator()
    base = f"{fleet.url}/dashboard"
    page = browser.page
    sign_in(page, base, viewer_secret(fleet))
    page.goto(f"{base}/benchmarks")

    # The curve: drawn by benchmarks.js (a uPlot canvas), over the batch sizes.
    box = page.locator(f".curve-box[data-curve-model='{MODEL}']")
    sync_api.expect(box).to_have_count(1)
    page.wait_for_selector(".chart.curve[data-drawn='1'] canvas")
    drawn = page.evaluate("document.querySelector('.chart.curve').uplot.data")
    assert drawn[0] == SIZES, drawn
    # Throughput by size, the failed size a gap (null), never a zero.
    latest = {**THROUGHPUT, STEP_SIZE: STEP_THROUGHPUT}
    assert drawn[1][: len(THROUGHPUT)] == pytest.approx([latest[s] for s in SIZES[:-1]], rel=0.01)
    assert drawn[1][-1] is None
    assert drawn[2][-1] is None

    # The optimum: the fastest latest run (16: 32 stepped down below it).
    sync_api.expect(box.locator("p.optimal")).to_have_attribute("data-optimal", str(OPTIMAL))
    sync_api.expect(box.locator("p.optimal")).to_contain_text(f"Optimal batch size {OPTIMAL}")
    sync_api.expect(box.locator("tr.optimal")).to_have_attribute("data-batch", str(OPTIMAL))
    failed = box.locator(f"tr[data-batch='{FAILED_SIZE}']")
    sync_api.expect(failed).to_have_class("failed")
    sync_api.expect(failed).to_contain_text("failed: out_of_memory")

    # The step down is an open regression (throughput down, latency up).
    regressions = page.locator("tr.regression-open", has_text=f"batch_size={STEP_SIZE}")
    sync_api.expect(regressions).to_have_count(2)
    sync_api.expect(page.locator("[data-count='regressions-open']")).to_have_text("2")
    regressed = _series_row(page, STEP_SIZE, "throughput_items_per_second")
    sync_api.expect(regressed).to_have_class("series-row regressed")
    browser.shoot("20-benchmarks-data")

    # A series row draws its history: one point per stored run, oldest first.
    chart = page.locator("#series-chart-plot")
    regressed.click()
    sync_api.expect(page.locator("#series-chart")).to_be_visible()
    sync_api.expect(chart).to_have_attribute("data-points", str(RUNS))
    page.wait_for_selector("#series-chart-plot canvas")
    history = page.evaluate("document.querySelector('#series-chart-plot').uplot.data")
    assert history[0] == sorted(history[0])
    assert history[1][-STEP_RUNS:] == [STEP_THROUGHPUT] * STEP_RUNS
    assert history[1][0] == pytest.approx(THROUGHPUT[STEP_SIZE], rel=0.01)
    sync_api.expect(page.locator("#series-chart-title")).to_contain_text(
        f"{MODEL} throughput_items_per_second"
    )
    sync_api.expect(regressed).to_have_class("series-row regressed selected")
    browser.shoot("21-benchmarks-history")

    # Another row (by keyboard) replaces the chart: one chart, its own figure.
    other = _series_row(page, 1, "latency_ms")
    other.focus()
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#series-chart-title")).to_contain_text(f"{MODEL} latency_ms")
    assert page.locator("#series-chart-plot .uplot").count() == 1
    history = page.evaluate("document.querySelector('#series-chart-plot').uplot.data")
    assert len(history[0]) == RUNS
    assert all(v == pytest.approx(10.0, rel=0.01) for v in history[1])
    sync_api.expect(regressed).to_have_class("series-row regressed")
    browser.shoot("22-benchmarks-history-latency")

    browser.check_traffic()


# ------------------------------------------------------------------ test runs

RUN_ID = "dash-run-1"


def suite(flaky_marker: Path, gate: Path) -> dict[str, str]:
    """The generated project's files; the flaky test's marker and the gate are files."""
    return {
        "tests/test_ok.py": """
            def test_one():
                pass

            def test_two():
                assert 1 + 1 == 2
        """,
        "tests/test_bad.py": """
            def test_broken():
                assert 1 == 2, "broken on purpose"
        """,
        # Fails the first time it runs anywhere, passes on its rerun (a file counter).
        "tests/test_flaky.py": f"""
            import os

            def test_flaky():
                marker = {str(flaky_marker)!r}
                first = not os.path.exists(marker)
                open(marker, "a").close()
                assert not first, "fails once"
        """,
        # Holds the run open until the browser has seen it running.
        "tests/test_gate.py": f"""
            import os, time

            def test_gate():
                open({str(gate) + ".waiting"!r}, "w").close()
                deadline = time.monotonic() + 90
                while not os.path.exists({str(gate)!r}):
                    assert time.monotonic() < deadline, "the gate was never opened"
                    time.sleep(0.05)
        """,
    }


TOTAL = 5
NODE_BROKEN = "tests/test_bad.py::test_broken"
NODE_FLAKY = "tests/test_flaky.py::test_flaky"


@pytest.mark.timeout(180)
def test_a_pytest_run_with_a_failure_and_a_flaky_test_on_the_run_and_tests_pages(
    fleet: Fleet,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    gate = tmp_path / "gate"
    for name, text in suite(tmp_path / "flaky-ran", gate).items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    for worker in ("run-a", "run-b"):
        fleet.start_worker(worker, wait=False)
    fleet.wait_for_workers(["run-a", "run-b"])
    base = f"{fleet.url}/dashboard"
    page = browser.page
    sign_in(page, base, viewer_secret(fleet))

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "testfleet",
            "run",
            "--coordinator",
            fleet.url,
            "--run-id",
            RUN_ID,
            "tests",
            "--rerun-failures",
            "1",
        ],
        cwd=project,
        env=fleet.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        fleet.wait_until(lambda: Path(f"{gate}.waiting").exists(), what="the gate test to start")
        # Running: listed, and its page polls its body.
        page.goto(f"{base}/runs")
        sync_api.expect(page.locator("tr.run-running", has_text=RUN_ID)).to_have_count(1)
        browser.shoot("23-runs-running")
        page.goto(f"{base}/runs/{quote(RUN_ID)}")
        sync_api.expect(page.locator("#run-body[data-running='true']")).to_have_count(1)
        page.evaluate("window.__notReloaded = true")
        browser.shoot("24-run-running")
        gate.touch()
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, output  # a test failed: the run fails

    # The page finishes by itself (no reload): done of total, the problems classified.
    sync_api.expect(page.locator("#run-body[data-running='false']")).to_have_count(
        1, timeout=WAIT_MS
    )
    assert page.evaluate("window.__notReloaded === true")
    sync_api.expect(page.locator("[data-count='done']")).to_have_text(f"{TOTAL} of {TOTAL}")
    sync_api.expect(page.locator("[data-count='failed']")).to_have_text("1")
    failures = page.locator("table.run-failures tbody tr")
    sync_api.expect(failures).to_have_count(2)
    broken = failures.filter(has_text=NODE_BROKEN)
    sync_api.expect(broken).to_have_class("kind-new")
    sync_api.expect(broken.locator(".badge.kind-new")).to_have_text("new")
    flaky = failures.filter(has_text=NODE_FLAKY)
    sync_api.expect(flaky).to_have_class("kind-flaky")
    sync_api.expect(flaky.locator(".badge.kind-flaky")).to_have_text("flaky")
    browser.shoot("25-run-finished")

    # The run list: finished, its counts.
    page.goto(f"{base}/runs")
    listed = page.locator("tr.run-finished", has_text=RUN_ID)
    sync_api.expect(listed).to_contain_text(f"{TOTAL} / {TOTAL}")

    # Tests: each with its strip; the flaky one flagged, its cell "passed on rerun".
    page.goto(f"{base}/tests")
    rows = page.locator("table.tests tbody tr:has(td.strip)")
    sync_api.expect(rows).to_have_count(TOTAL)
    flaky_row = rows.filter(has_text=NODE_FLAKY)
    sync_api.expect(flaky_row).to_have_class("flaky")
    sync_api.expect(flaky_row.locator("td.strip a.cell.outcome-rerun")).to_have_count(1)
    broken_row = rows.filter(has_text=NODE_BROKEN)
    sync_api.expect(broken_row.locator("td.strip a.cell.outcome-failed")).to_have_count(1)
    sync_api.expect(
        rows.filter(has_text="test_one").locator("a.cell.outcome-passed")
    ).to_have_count(1)
    browser.shoot("26-tests")

    # A worker's own page draws its load sparkline, as the workers list does.
    page.goto(f"{base}/workers/run-a")
    page.wait_for_selector("dd.load svg.spark polyline.spark-cpu", state="attached")
    browser.shoot("27-worker-load")

    browser.check_traffic()
