"""Acting from the dashboard: the role rules of the REST API, plus a CSRF token.

A real coordinator app in-process on a fake clock, signed in through the form
(the cookie), acting through the pages' forms.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from api_seed import Seeded, seed_store
from fastapi.testclient import TestClient

from testfleet.coordinator.app import create_app
from testfleet.coordinator.dashboard.actions import CsrfKey
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.tokens import Role
from testfleet.testing import FakeClock

T0 = 1_800_000_000.0
CSRF = re.compile(r'name="csrf" value="([0-9a-f]*)"')


@dataclass
class Site:
    client: TestClient
    seeded: Seeded
    secrets: dict[str, str]

    def sign_in(self, who: str) -> None:
        self.client.cookies.clear()
        answer = self.client.post(
            "/dashboard/login", data={"token": self.secrets[who]}, follow_redirects=False
        )
        assert answer.status_code == 303, answer.text

    def form_token(self, page: str) -> str | None:
        found = CSRF.search(self.client.get(page).text)
        return None if found is None else found.group(1)

    def bearer(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[who]}"}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    path = tmp_path / "act.duckdb"
    seeded = seed_store(path)
    secrets = {
        who: create_token_in_file(path, who, role, now=T0).secret
        for who, role in (
            ("viewer", Role.VIEWER),
            ("alice", Role.SUBMITTER),
            ("admin", Role.ADMIN),
        )
    }
    with TestClient(create_app(path, clock=FakeClock(T0))) as client:
        yield Site(client, seeded, secrets)


def test_a_viewer_sees_no_buttons_and_may_not_act(site: Site) -> None:
    site.sign_in("viewer")
    queued = f"/dashboard/tasks/{site.seeded.queued_task}"
    assert site.form_token(queued) is None
    refused = site.client.post(f"{queued}/cancel", data={"csrf": "x"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"


def test_an_admin_cancels_a_queued_task_with_the_pages_form_token(site: Site) -> None:
    site.sign_in("admin")
    page = f"/dashboard/tasks/{site.seeded.queued_task}"
    token = site.form_token(page)
    assert token
    done = site.client.post(f"{page}/cancel", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == page
    task = site.client.get(f"/api/v1/tasks/{site.seeded.queued_task}", headers=site.bearer("admin"))
    assert task.json()["task"]["status"] == "cancelled"
    assert site.form_token(page) is None  # finished: no button any more
    again = site.client.post(f"{page}/cancel", data={"csrf": token})
    assert again.status_code == 409
    audit = site.client.get("/api/v1/audit", headers=site.bearer("admin")).json()
    kinds = [event["kind"] for event in audit["events"]]
    assert "tasks_cancelled" in kinds


@pytest.mark.parametrize("csrf", [None, "", "0" * 40])
def test_a_form_without_this_sessions_token_changes_nothing(site: Site, csrf: str | None) -> None:
    site.sign_in("admin")
    page = f"/dashboard/tasks/{site.seeded.queued_task}"
    data = {} if csrf is None else {"csrf": csrf}
    refused = site.client.post(f"{page}/cancel", data=data)
    assert refused.status_code == 400
    assert "csrf: the form's token is missing or stale" in html.unescape(refused.text)
    task = site.client.get(f"/api/v1/tasks/{site.seeded.queued_task}", headers=site.bearer("admin"))
    assert task.json()["task"]["status"] == "queued"


def test_another_sessions_token_or_another_origin_is_refused(site: Site) -> None:
    site.sign_in("alice")
    alices = site.form_token(f"/dashboard/tasks/{site.seeded.queued_task}")
    assert alices
    site.sign_in("admin")
    page = f"/dashboard/tasks/{site.seeded.queued_task}"
    assert site.client.post(f"{page}/cancel", data={"csrf": alices}).status_code == 400
    token = site.form_token(page)
    elsewhere = site.client.post(
        f"{page}/cancel", data={"csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 400
    assert "origin" in elsewhere.text


def test_a_submitter_may_cancel_only_its_own_tasks(site: Site) -> None:
    site.sign_in("alice")
    page = f"/dashboard/tasks/{site.seeded.queued_task}"
    token = site.form_token(page)
    assert token  # the button shows; whose task it is is checked on the way in
    refused = site.client.post(f"{page}/cancel", data={"csrf": token})
    assert refused.status_code == 403
    assert "only the tasks it submitted" in refused.text


def test_drain_and_undrain_need_an_admin(site: Site) -> None:
    worker = site.seeded.worker_id
    page = f"/dashboard/workers/{worker}"
    site.sign_in("alice")
    assert site.client.post(f"{page}/drain", data={"csrf": "x"}).status_code == 403
    site.sign_in("admin")
    # The seeded worker is not connected: no button, but the route answers as the API does.
    assert site.form_token(page) is None
    # The token is per session, not per form: take it from a page that has a form.
    token_value = site.form_token(f"/dashboard/tasks/{site.seeded.queued_task}")
    assert token_value
    drained = site.client.post(f"{page}/drain", data={"csrf": token_value}, follow_redirects=False)
    assert drained.status_code == 303, drained.text
    undrained = site.client.post(
        f"{page}/undrain", data={"csrf": token_value}, follow_redirects=False
    )
    assert undrained.status_code == 303
    missing = site.client.post("/dashboard/workers/nobody/drain", data={"csrf": token_value})
    assert missing.status_code == 404


def test_the_csrf_key_binds_tokens_to_a_secret() -> None:
    key = CsrfKey(b"k" * 32)
    assert key.valid("secret-a", key.token("secret-a"))
    assert not key.valid("secret-b", key.token("secret-a"))
    assert CsrfKey(b"j" * 32).token("secret-a") != key.token("secret-a")
