"""The dashboard in a real browser: Debian's chromium driven by Playwright against
a real fleet on loopback (TLS, tokens), as a person would use it.

Signs in with a viewer token; the overview's counters follow a task from
submitted to done and a chart's data grows, with no reload; a killed worker
shows as lost on the workers page, with no reload; a printing command's log
grows on its task page, with no reload, and ends with its last line; every
page renders
(screenshots under the test's tmp dir, ``screenshots/``); an admin drains a
worker from its page (a viewer sees no button). Throughout, every
request the browser makes is recorded: none leaves 127.0.0.1, and no page logs
a console error.

The browser is the system's (``/usr/bin/chromium``, the Makefile installs it),
never one ``playwright install`` downloads; without it or the ``playwright``
package the test skips with a reason starting "needs", which CI turns into a
failure (tests/conftest.py).
"""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from it_fleet import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, Fleet

from testfleet.local_fleet import CoordinatorOptions

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.integration, pytest.mark.slow]

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')"
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Milliseconds Playwright waits for a page to show what a step expects.
WAIT_MS = 30_000


class Browser:
    """One chromium page that records every request and console error."""

    def __init__(self, page: Page, shots: Path) -> None:
        self.page = page
        self.shots = shots
        self.requests: list[str] = []
        self.console_errors: list[str] = []

    def shoot(self, name: str, page: Page | None = None) -> None:
        shown = page or self.page
        shown.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def record(self, page: Page) -> None:
        """Record ``page``'s requests and console errors here."""
        page.on("request", lambda request: self.requests.append(request.url))
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: self.console_errors.append(str(error)))
        page.set_default_timeout(WAIT_MS)

    def new_page(self) -> Page:
        """Another tab in the same context (signed in alike), recorded like the first."""
        page = self.page.context.new_page()
        self.record(page)
        return page

    def check_traffic(self) -> None:
        """No request left 127.0.0.1 and no page logged a console error."""
        hosts = {urlsplit(url).hostname for url in self.requests if not url.startswith("data:")}
        assert hosts == {"127.0.0.1"}, self.requests
        assert self.console_errors == []


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("needs chromium (make test installs Debian's package)")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # The fleet's certificate is from its own CA, which chromium does not know.
            context = chromium.new_context(
                ignore_https_errors=True, viewport={"width": 1280, "height": 900}
            )
            page = context.new_page()
            recorder = Browser(page, shots)
            recorder.record(page)
            yield recorder
            # Closed before the fleet stops: an open event stream would hold the
            # coordinator's shutdown for its grace period.
            context.close()
        finally:
            chromium.close()


TICKS = 25
#: A line every 0.2 s for about 5 s.
TICK_SCRIPT = (
    "import time\n"
    f"for i in range({TICKS}):\n"
    "    print(f'tick {i}', flush=True)\n"
    "    time.sleep(0.2)\n"
)


def _ticking_task(task_id: str) -> dict[str, object]:
    return {
        "task_id": task_id,
        "type": "command",
        "timeout_seconds": 60,
        "config": {"argv": [sys.executable, "-c", TICK_SCRIPT]},
    }


def viewer_secret(fleet: Fleet) -> str:
    with fleet.http() as http:
        answer = http.post("/api/v1/tokens", json={"name": "dashboard-viewer", "role": "viewer"})
        answer.raise_for_status()
        return str(answer.json()["secret"])


def card(page: Page, name: str) -> str:
    return page.locator(f"[data-count='{name}'] .value").inner_text().split()[0]


@pytest.mark.timeout(240)
def test_the_dashboard_follows_the_fleet_live_in_a_browser(
    fleet: Fleet, browser: Browser, tmp_path: Path
) -> None:
    fleet.start_coordinator()
    fleet.start_worker("dash-a", slots=1, wait=False)
    victim = fleet.start_worker("dash-b", slots=1, wait=False)
    fleet.wait_for_workers(["dash-a", "dash-b"])
    page = browser.page
    base = f"{fleet.url}/dashboard"

    # Not signed in: the sign-in form, which takes a viewer token.
    page.goto(f"{base}/")
    assert urlsplit(page.url).path == "/dashboard/login"
    browser.shoot("01-login")
    page.fill("#token", viewer_secret(fleet))
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    page.wait_for_function("document.querySelector('#chart-throughput .uplot') !== null")
    page.evaluate("window.__notReloaded = true")
    assert card(page, "workers-idle") == "2"
    # The coordinator's own health: DuckDB commit time and event-loop lag.
    page.wait_for_selector("[data-health='commit']")
    page.wait_for_selector("[data-health='loop-lag']")
    browser.shoot("02-overview")

    # A task runs: the counters follow it without a reload.
    fleet.client.submit(
        {"task_id": "dash-task-1", "type": "simulated", "config": {"duration_seconds": 4}}
    )
    page.wait_for_function(
        "document.querySelector(\"[data-count='running'] .value\").textContent.trim()"
        ".startsWith('1')"
    )
    assert card(page, "workers-busy") == "1"
    browser.shoot("03-overview-running")
    fleet.wait_terminal(["dash-task-1"], timeout=60)
    page.wait_for_function(
        "document.querySelector(\"[data-count='running'] .value\").textContent.trim()"
        ".startsWith('0')"
    )
    # The charts load their history, then append the stream's points.
    before = int(page.get_attribute("#chart-throughput", "data-points") or 0)
    page.wait_for_function(
        f"Number(document.querySelector('#chart-throughput').dataset.points) > {before}"
    )
    assert page.evaluate("window.__notReloaded === true")
    browser.shoot("04-overview-after")

    # Workers: a killed worker shows as lost, without a reload.
    page.goto(f"{base}/workers")
    page.wait_for_selector("tr[data-worker='dash-b']")
    # Each worker's load sparkline (drawn server-side from its heartbeats). Attached,
    # not visible: a flat line has no height, which Playwright counts as hidden.
    page.wait_for_selector(
        "tr[data-worker='dash-a'] svg.spark polyline.spark-cpu", state="attached"
    )
    page.evaluate("window.__notReloaded = true")
    browser.shoot("05-workers")
    fleet.send_signal(victim, signal.SIGKILL)
    page.wait_for_selector("tr[data-worker='dash-b'].state-lost")
    assert page.evaluate("window.__notReloaded === true")
    browser.shoot("06-workers-lost")

    # The other pages render.
    page.goto(f"{base}/workers/dash-a")
    page.wait_for_selector("text=Recent tasks on this worker")
    browser.shoot("07-worker")
    page.goto(f"{base}/tasks")
    page.wait_for_selector("tr[data-task='dash-task-1']")
    browser.shoot("08-tasks")
    page.goto(f"{base}/tasks/dash-task-1")
    page.wait_for_selector("text=Attempts")
    browser.shoot("09-task")

    # The task page's log tail grows while a command prints, without a reload,
    # and ends with its last line once the task is done.
    fleet.client.submit([_ticking_task("dash-log-1")])
    page.goto(f"{base}/tasks/dash-log-1")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_function("document.querySelector('#log-text').textContent.includes('tick 2')")
    assert page.locator("#log-poll[hx-get]").count() == 1  # still following, not the final log
    browser.shoot("09b-task-log-running")
    page.wait_for_function(
        f"document.querySelector('#log-text').textContent.includes('tick {TICKS - 1}')"
    )
    page.wait_for_selector("#log-poll[data-finished='true']")
    shown = page.inner_text("#log-text").splitlines()
    assert shown == [f"tick {i}" for i in range(TICKS)], shown
    assert page.evaluate("window.__notReloaded === true")
    browser.shoot("09c-task-log-done")

    # Alerts and benchmarks render.
    page.goto(f"{base}/alerts")
    page.wait_for_selector("table.notifications")
    assert "firing" in page.inner_text("h1")
    browser.shoot("11-alerts")
    page.goto(f"{base}/benchmarks")
    page.wait_for_selector("text=No open regressions.")
    browser.shoot("12-benchmarks")
    # Test runs and tests (this fleet ran no pytest run: the empty pages render).
    page.goto(f"{base}/runs")
    page.wait_for_selector("text=No test runs yet.")
    browser.shoot("13-test-runs")
    page.goto(f"{base}/tests")
    page.wait_for_selector("text=No tests recorded yet.")
    browser.shoot("14-tests")
    page.goto(f"{base}/tasks?status=bogus")
    assert "status: 'bogus' is not one of" in page.inner_text("main")

    # Acting needs the role: a viewer sees no drain button; an admin drains.
    page.goto(f"{base}/workers/dash-a")
    assert page.locator("form.action").count() == 0
    page.click("form.logout button")
    page.wait_for_url(f"{base}/login")
    page.goto(f"{base}/workers/dash-a")
    page.fill("#token", fleet.token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/workers/dash-a")
    page.click("form.action button")
    page.wait_for_selector("h1 .badge.state-draining")
    browser.shoot("10-worker-drained")

    hosts = {urlsplit(url).hostname for url in browser.requests if not url.startswith("data:")}
    assert hosts == {"127.0.0.1"}, browser.requests
    assert browser.requests  # the recorder saw the traffic
    # The bad filter's 400 is the one error the browser logs (a failed load), on purpose.
    unexpected = [e for e in browser.console_errors if "400" not in e]
    assert unexpected == []


# --------------------------------------------------------------------------
# A worker killed mid-task: lost on the workers page, an alert firing on the
# alerts page (its own refresh), and the task's log tail on its page showing
# the retry's separator, all without a reload.

ALERTS_FILE = """
evaluation_interval_seconds = 0.2

[rules.worker_lost]
for_seconds = 0
"""


#: Lines the retry prints (the first attempt prints for a minute: it is killed).
RETRY_TICKS = 10


def _retried_task(task_id: str, marker: Path) -> dict[str, object]:
    """A command whose first attempt (no ``marker`` file yet) prints for a minute
    and whose next one prints RETRY_TICKS lines: the kill always lands mid-task."""
    script = (
        "import os, time\n"
        f"marker = {str(marker)!r}\n"
        "first = not os.path.exists(marker)\n"
        "open(marker, 'a').close()\n"
        f"for i in range(300 if first else {RETRY_TICKS}):\n"
        "    print(f'tick {i}', flush=True)\n"
        "    time.sleep(0.2)\n"
    )
    return {
        "task_id": task_id,
        "type": "command",
        "timeout_seconds": 120,
        "config": {"argv": [sys.executable, "-c", script]},
    }


def sign_in(page: Page, base: str, secret: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#token", secret)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


@pytest.mark.timeout(240)
def test_a_killed_worker_is_lost_fires_an_alert_and_its_task_retries_with_a_separator(
    fleet: Fleet, browser: Browser, tmp_path: Path
) -> None:
    alerts_file = tmp_path / "alerts.toml"
    alerts_file.write_text(ALERTS_FILE)
    fleet.start_coordinator(
        CoordinatorOptions(
            heartbeat_interval=HEARTBEAT_INTERVAL,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            log_level="info",
            extra_args=["--alerts", str(alerts_file)],
        )
    )
    victim = fleet.start_worker("lost-a")
    fleet.wait_for_workers(["lost-a"])
    base = f"{fleet.url}/dashboard"
    logs = browser.page
    sign_in(logs, base, viewer_secret(fleet))

    # The alerts page, open in a tab of its own before anything fails.
    alerts = browser.new_page()
    alerts.goto(f"{base}/alerts")
    alerts.evaluate("window.__notReloaded = true")
    sync_api.expect(alerts.locator("[data-count='firing']")).to_have_text("0 firing")

    # A printing task starts on the only worker; its page follows the output.
    fleet.client.submit([_retried_task("retry-log-1", tmp_path / "first-attempt-ran")])
    logs.goto(f"{base}/tasks/retry-log-1")
    logs.evaluate("window.__notReloaded = true")
    sync_api.expect(logs.locator("#log-text")).to_contain_text("tick 2", timeout=WAIT_MS)

    # Another worker joins, and the first is killed mid-task.
    fleet.start_worker("lost-b")
    fleet.wait_for_workers(["lost-b"])
    fleet.send_signal(victim, signal.SIGKILL)

    # The alert fires on the alerts page without a reload.
    firing = alerts.locator("table.alerts tr.state-firing", has_text="worker_id=lost-a")
    sync_api.expect(firing).to_have_count(1, timeout=WAIT_MS)
    sync_api.expect(firing).to_contain_text("worker_lost")
    sync_api.expect(alerts.locator("[data-count='firing']")).to_have_text("1 firing")
    assert alerts.evaluate("window.__notReloaded === true")
    browser.shoot("13-alerts-firing", alerts)

    # The workers page shows it lost.
    alerts.goto(f"{base}/workers")
    sync_api.expect(alerts.locator("tr[data-worker='lost-a'].state-lost")).to_have_count(1)
    browser.shoot("14-workers-one-lost", alerts)

    # The task is retried on the other worker; the log box says so on a line
    # of its own, then the retry's output follows, to its last line.
    separator = "── attempt 2 on worker lost-b ──"
    sync_api.expect(logs.locator("#log-text")).to_contain_text(separator, timeout=WAIT_MS)
    sync_api.expect(logs.locator("#log-poll[data-finished='true']")).to_have_count(
        1, timeout=WAIT_MS
    )
    shown = logs.inner_text("#log-text").splitlines()
    assert separator in shown, shown
    after = shown[shown.index(separator) + 1 :]
    assert after == [f"tick {i}" for i in range(RETRY_TICKS)], shown
    assert shown[0] == "tick 0"  # the first attempt's output stays above it
    # The header and the attempt timeline follow too (the block re-reads itself
    # while the task is open): the task completed on lost-b at attempt 2.
    sync_api.expect(logs.locator("#task-detail[data-status='completed']")).to_have_count(
        1, timeout=WAIT_MS
    )
    sync_api.expect(logs.locator("#task-detail table.timeline tbody tr")).to_have_count(2)
    assert logs.evaluate("window.__notReloaded === true")
    browser.shoot("15-task-log-retried")
    assert fleet.wait_terminal(["retry-log-1"])["retry-log-1"]["status"] == "completed"

    browser.check_traffic()
