"""The dashboard's pages on a real coordinator app (in-process, fake clock).

Signing in with a pasted token and the cookie it sets, the same refusals as a
bearer token (wrong, expired, revoked, wrong role), the cookie taking no
effect on the REST API, every page rendering the seeded store's facts, and
bad filters answered 400 naming the parameter.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from api_seed import Seeded, seed_store
from fastapi.testclient import TestClient

from testfleet.coordinator.app import create_app
from testfleet.coordinator.auth import SESSION_COOKIE
from testfleet.coordinator.dashboard.login import safe_next
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.tokens import Role
from testfleet.testing import FakeClock

T0 = 1_800_000_000.0
HTML = {"Accept": "text/html,application/xhtml+xml"}


@dataclass
class Site:
    client: TestClient
    clock: FakeClock
    seeded: Seeded
    secrets: dict[str, str]

    def sign_in(self, who: str) -> None:
        answer = self.client.post(
            "/dashboard/login",
            data={"token": self.secrets[who], "next": "/dashboard/workers"},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/dashboard/workers"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    path = tmp_path / "dash.duckdb"
    seeded = seed_store(path)
    secrets = {}
    for who, role, expires in (
        ("viewer", Role.VIEWER, None),
        ("brief", Role.VIEWER, 600.0),
        ("admin", Role.ADMIN, None),
        ("newbie", Role.ENROL, 600.0),
    ):
        secrets[who] = create_token_in_file(
            path, who, role, expires_in_seconds=expires, now=T0
        ).secret
    clock = FakeClock(T0)
    with TestClient(create_app(path, clock=clock)) as client:
        yield Site(client, clock, seeded, secrets)


def test_a_browser_without_a_credential_is_sent_to_sign_in_and_back(site: Site) -> None:
    answer = site.client.get("/dashboard/tasks?status=failed", headers=HTML, follow_redirects=False)
    assert answer.status_code == 303
    where = urlsplit(answer.headers["location"])
    assert where.path == "/dashboard/login"
    assert parse_qs(where.query)["next"] == ["/dashboard/tasks?status=failed"]
    form = site.client.get(answer.headers["location"])
    assert form.status_code == 200
    assert 'name="token"' in form.text
    assert 'value="/dashboard/tasks?status=failed"' in form.text
    # Not a browser: the API's 401.
    plain = site.client.get("/dashboard/tasks")
    assert plain.status_code == 401
    assert plain.json()["error"]["code"] == "unauthenticated"


def test_signing_in_sets_a_strict_http_only_cookie_for_the_dashboard_only(site: Site) -> None:
    answer = site.client.post(
        "/dashboard/login", data={"token": site.secrets["viewer"]}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "samesite=strict" in lowered
    assert "path=/dashboard" in lowered
    assert "secure" not in lowered  # plain HTTP here; Secure when served over HTTPS
    assert site.client.get("/dashboard/", headers=HTML).status_code == 200
    # The cookie is for the dashboard: the REST API still wants a bearer header.
    sent = {"Cookie": f"{SESSION_COOKIE}={site.secrets['viewer']}"}
    site.client.cookies.clear()
    api = site.client.get("/api/v1/tasks", headers=sent)
    assert api.status_code == 401, api.text


@pytest.mark.parametrize(
    ("token", "status", "words"),
    [
        ("", 400, "token: paste an API token"),
        ("junk", 401, "not a testfleet token"),
        ("tfk_tok-0000000000000000_" + "A" * 43, 401, "not known"),
    ],
)
def test_a_bad_token_gets_the_form_again_with_the_reason(
    site: Site, token: str, status: int, words: str
) -> None:
    answer = site.client.post("/dashboard/login", data={"token": token}, follow_redirects=False)
    assert answer.status_code == status
    assert words in answer.text
    assert "set-cookie" not in answer.headers


def test_an_enrol_token_cannot_sign_in(site: Site) -> None:
    answer = site.client.post("/dashboard/login", data={"token": site.secrets["newbie"]})
    assert answer.status_code == 403
    assert "needs viewer" in answer.text


def test_the_cookie_is_checked_like_a_bearer_token_expiry_and_revocation(site: Site) -> None:
    site.sign_in("brief")
    assert site.client.get("/dashboard/workers", headers=HTML).status_code == 200
    site.clock.advance(600)
    expired = site.client.get("/dashboard/workers", headers=HTML, follow_redirects=False)
    assert expired.status_code == 303
    assert "expired" in parse_qs(urlsplit(expired.headers["location"]).query)["reason"][0]

    site.client.cookies.clear()
    site.sign_in("viewer")
    assert site.client.get("/dashboard/workers", headers=HTML).status_code == 200
    token_id = site.secrets["viewer"].split("_")[1]
    revoked = site.client.post(
        f"/api/v1/tokens/{token_id}/revoke",
        headers={"Authorization": f"Bearer {site.secrets['admin']}"},
    )
    assert revoked.status_code == 200, revoked.text
    refused = site.client.get("/dashboard/workers")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]


def test_signing_out_forgets_the_cookie(site: Site) -> None:
    site.sign_in("viewer")
    out = site.client.post("/dashboard/logout", follow_redirects=False)
    assert out.status_code == 303
    assert f'{SESSION_COOKIE}=""' in out.headers["set-cookie"]
    assert site.client.get("/dashboard/", headers=HTML, follow_redirects=False).status_code == 303


def test_every_page_renders_the_seeded_facts(site: Site) -> None:
    site.sign_in("viewer")
    seeded = site.seeded
    overview = site.client.get("/dashboard/")
    assert overview.status_code == 200
    assert 'sse-connect="/dashboard/events"' in overview.text
    assert 'sse-swap="overview"' in overview.text
    workers = site.client.get("/dashboard/workers")
    assert seeded.worker_id in workers.text
    assert "gpu-box-1.lab" in workers.text
    worker = site.client.get(f"/dashboard/workers/{seeded.worker_id}")
    assert worker.status_code == 200
    assert "failure rate" in worker.text
    tasks = site.client.get("/dashboard/tasks")
    for task_id in (seeded.queued_task, seeded.completed_task, seeded.failed_task):
        assert task_id in tasks.text
    failed_only = site.client.get("/dashboard/tasks?status=failed")
    assert seeded.failed_task in failed_only.text
    assert seeded.completed_task not in failed_only.text
    rows = site.client.get("/dashboard/tasks/rows?status=failed")
    assert seeded.failed_task in rows.text
    assert "<html" not in rows.text
    task = site.client.get(f"/dashboard/tasks/{seeded.failed_task}")
    assert task.status_code == 200
    assert "Attempts" in task.text
    assert 'id="log-tail"' in task.text
    run = site.client.get(f"/dashboard/tasks?run={seeded.run_id}")
    assert run.status_code == 200
    history = site.client.get("/dashboard/history")
    assert history.status_code == 200
    assert isinstance(history.json()["points"], list)


def test_the_task_list_shows_the_newest_tasks(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    # The seed's last benchmark task was made an hour after every other task;
    # with room for one row, the list must show it, not the oldest.
    from testfleet.coordinator.dashboard import routes

    monkeypatch.setattr(routes, "TASK_ROWS", 1)
    site.sign_in("viewer")
    tasks = site.client.get("/dashboard/tasks")
    assert "bench-11" in tasks.text
    assert site.seeded.queued_task not in tasks.text


def test_unknown_ids_are_404_pages(site: Site) -> None:
    site.sign_in("viewer")
    assert site.client.get("/dashboard/tasks/no-such-task").status_code == 404
    assert site.client.get("/dashboard/workers/nobody").status_code == 404


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("/dashboard/tasks?status=bogus", "status: 'bogus' is not one of: queued"),
        ("/dashboard/tasks?type=nope", "type: 'nope' is not one of"),
        ("/dashboard/tasks?priority=high", "priority: 'high' is not a whole number"),
        ("/dashboard/workers?state=asleep", "state: 'asleep' is not one of: idle"),
        ("/dashboard/workers/rows?q=%00", "q: give at most 200 printable characters"),
    ],
)
def test_a_bad_filter_is_a_400_naming_the_parameter(site: Site, url: str, words: str) -> None:
    site.sign_in("viewer")
    answer = site.client.get(url)
    assert answer.status_code == 400
    assert words in html.unescape(answer.text)


def test_the_event_stream_wants_an_event_stream_client(site: Site) -> None:
    site.sign_in("viewer")
    answer = site.client.get("/dashboard/events")
    assert answer.status_code == 406
    assert "text/event-stream" in answer.text


def test_static_files_are_public_and_served(site: Site) -> None:
    for name in ("htmx.min.js", "htmx-ext-sse.min.js", "uPlot.iife.min.js", "dashboard.js"):
        assert site.client.get(f"/dashboard/static/{name}").status_code == 200


def test_no_dashboard_route_is_in_the_openapi_document(site: Site) -> None:
    document = site.client.get(
        "/openapi.json", headers={"Authorization": f"Bearer {site.secrets['viewer']}"}
    ).json()
    assert not [path for path in document["paths"] if path.startswith("/dashboard")]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/dashboard/tasks?x=1", "/dashboard/tasks?x=1"),
        ("https://elsewhere.example/dashboard/", "/dashboard/"),
        ("//elsewhere.example/", "/dashboard/"),
        ("/api/v1/tasks", "/dashboard/"),
        ("/dashboard/\\\\elsewhere", "/dashboard/"),
        ("", "/dashboard/"),
    ],
)
def test_sign_in_returns_only_to_a_dashboard_page(target: str, expected: str) -> None:
    assert safe_next("/dashboard", target) == expected


def test_an_open_tasks_header_and_timeline_refresh_themselves_and_a_final_ones_do_not(
    site: Site,
) -> None:
    # The block the page swaps in place (hx-select) must carry the trigger only
    # while the task can still change, or a finished task's page polls forever.
    site.sign_in("viewer")

    def detail_tag(task_id: str) -> str:
        text = site.client.get(f"/dashboard/tasks/{task_id}").text
        start = text.index('<div id="task-detail"')
        return text[start : text.index(">", start) + 1]

    queued = detail_tag(site.seeded.queued_task)
    assert 'hx-trigger="every 2s"' in queued
    assert 'hx-select="#task-detail"' in queued
    assert f'hx-get="/dashboard/tasks/{site.seeded.queued_task}"' in queued
    assert 'data-status="queued"' in queued
    failed = detail_tag(site.seeded.failed_task)
    assert "hx-trigger" not in failed
    assert 'data-status="failed"' in failed
