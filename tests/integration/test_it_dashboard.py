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
from it_fleet import Fleet

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

    def shoot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


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
            page.on("request", lambda request: recorder.requests.append(request.url))
            page.on(
                "console",
                lambda message: (
                    recorder.console_errors.append(message.text)
                    if message.type == "error"
                    else None
                ),
            )
            page.on("pageerror", lambda error: recorder.console_errors.append(str(error)))
            page.set_default_timeout(WAIT_MS)
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
