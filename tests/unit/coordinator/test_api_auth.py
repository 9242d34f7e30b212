"""Tokens with roles on every route of a real coordinator app (issue 10).

The app runs in-process under Starlette's ``TestClient`` on a fake clock, over
a DuckDB file seeded with one of everything (``api_seed``) and a token per
role written into the file first (as ``testfleet tokens create --db`` does).
Every route of ``app.routes`` is enumerated, so a new route must be classified
in :data:`NEEDS` (or the test fails) and is then checked like the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from api_seed import Seeded, seed_store
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route

from testfleet.coordinator.app import create_app
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.protocol.codec import encode
from testfleet.protocol.messages import PROTOCOL_VERSION, Hello
from testfleet.security.audit import AuditKind
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.pki import init_ca, load_ca
from testfleet.security.tokens import Role
from testfleet.testing import FakeClock

T0 = 1_800_000_000.0
EXPIRES_IN = 3600.0
#: Unfinished tasks a token may have (so that a quota refusal can be audited).
QUOTA = 3
SETTINGS = CoordinatorSettings(max_queued_per_submitter=QUOTA)

#: The least role each route needs; every route of the app must be here.
NEEDS: dict[str, Role | None] = {
    "GET /api/v1/health": None,
    "GET /api/v1/health/live": None,
    "POST /api/v1/tasks": Role.SUBMITTER,
    "POST /api/v1/tasks/cancel": Role.SUBMITTER,
    "POST /api/v1/tasks/{task_id}/cancel": Role.SUBMITTER,
    "POST /api/v1/workers/{worker_id}/drain": Role.ADMIN,
    "POST /api/v1/workers/{worker_id}/undrain": Role.ADMIN,
    "POST /api/v1/sql": Role.ADMIN,
    "GET /api/v1/export/{table}": Role.ADMIN,
    "POST /api/v1/tokens": Role.ADMIN,
    "GET /api/v1/tokens": Role.ADMIN,
    "POST /api/v1/tokens/{token_id}/revoke": Role.ADMIN,
    "GET /api/v1/audit": Role.ADMIN,
    "POST /api/v1/admin/backup": Role.ADMIN,
    "POST /api/v1/workers/enrol": Role.ENROL,
    "GET /api/v1/tasks": Role.VIEWER,
    "GET /api/v1/tasks/{task_id}": Role.VIEWER,
    "GET /api/v1/tasks/{task_id}/log": Role.VIEWER,
    "GET /api/v1/tasks/{task_id}/log/stream": Role.VIEWER,
    "GET /api/v1/workers": Role.VIEWER,
    "GET /api/v1/stats": Role.VIEWER,
    "GET /api/v1/results/models": Role.VIEWER,
    "GET /api/v1/results/compare": Role.VIEWER,
    "GET /api/v1/results/history": Role.VIEWER,
    "GET /api/v1/test-runs/{run_id}": Role.VIEWER,
    "GET /api/v1/tests/durations": Role.VIEWER,
    "GET /api/v1/alerts": Role.VIEWER,
    "GET /api/v1/regressions": Role.VIEWER,
    "GET /metrics": Role.VIEWER,
    "GET /openapi.json": Role.VIEWER,
    "GET /docs": Role.VIEWER,
    # The dashboard (a viewer token in the header, or the sign-in cookie).
    "GET /dashboard/": Role.VIEWER,
    "GET /dashboard/history": Role.VIEWER,
    "GET /dashboard/workers": Role.VIEWER,
    "GET /dashboard/workers/rows": Role.VIEWER,
    "GET /dashboard/workers/{worker_id}": Role.VIEWER,
    "GET /dashboard/tasks": Role.VIEWER,
    "GET /dashboard/tasks/rows": Role.VIEWER,
    "GET /dashboard/tasks/{task_id}": Role.VIEWER,
    "GET /dashboard/tasks/{task_id}/log": Role.VIEWER,
    "GET /dashboard/alerts": Role.VIEWER,
    "GET /dashboard/benchmarks": Role.VIEWER,
    "GET /dashboard/runs": Role.VIEWER,
    "GET /dashboard/runs/{run_id}": Role.VIEWER,
    "GET /dashboard/runs/{run_id}/live": Role.VIEWER,
    "GET /dashboard/tests": Role.VIEWER,
    "GET /dashboard/benchmarks/history": Role.VIEWER,
    # Answers 406 to a client that does not ask for text/event-stream (these
    # requests), so it does not stream forever here; streaming is tested in
    # test_dashboard_feed.py.
    "GET /dashboard/events": Role.VIEWER,
    # Acting from the dashboard: the role first, then the form's CSRF token
    # (these requests carry none, so an allowed role gets 400; see
    # test_dashboard_actions.py).
    "POST /dashboard/tasks/{task_id}/cancel": Role.SUBMITTER,
    "POST /dashboard/workers/{worker_id}/drain": Role.ADMIN,
    "POST /dashboard/workers/{worker_id}/undrain": Role.ADMIN,
    # Last: it revokes the seeded worker, which drain and undrain above still need.
    "POST /api/v1/workers/{worker_id}/revoke": Role.ADMIN,
}
#: Not API routes: Swagger UI's own files and the dashboard's (public, see
#: coordinator/auth.py), the dashboard's sign-in form (it takes the token;
#: test_dashboard_pages.py) and the worker channel (workers authenticate on it,
#: not with API tokens).
NOT_TOKEN_ROUTES = {
    "MOUNT /docs/assets",
    "MOUNT /dashboard/static",
    "GET /dashboard/login",
    "POST /dashboard/login",
    "POST /dashboard/logout",
    "WEBSOCKET /api/v1/workers/connect",
}


def every_route(app: FastAPI) -> list[str]:
    """``METHOD /path`` of every route the app serves, included routers' too."""
    found: list[str] = []
    for route in app.routes:
        candidates = getattr(route, "effective_candidates", None)
        if candidates is not None:  # an included router (FastAPI 0.16x)
            for context in candidates():
                found += [f"{m} {context.path}" for m in sorted(context.original_route.methods)]
        elif isinstance(route, APIWebSocketRoute):
            found.append(f"WEBSOCKET {route.path}")
        elif isinstance(route, Mount):
            found.append(f"MOUNT {route.path}")
        elif isinstance(route, APIRoute | Route):
            found += [f"{m} {route.path}" for m in sorted(route.methods or ()) if m != "HEAD"]
    return found


@dataclass
class Fleet:
    client: TestClient
    clock: FakeClock
    seeded: Seeded
    path: Path
    secrets: dict[str, str]
    token_ids: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[who]}"}

    def call(self, who: str | None, method: str, url: str, **kwargs: Any) -> Any:
        headers = {} if who is None else self.headers(who)
        return self.client.request(method, url, headers=headers, **kwargs)


@pytest.fixture
def fleet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Fleet]:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "auth.duckdb"
    seeded = seed_store(path)
    secrets, ids = {}, {}
    for who, role, expires in (
        ("admin", Role.ADMIN, None),
        ("viewer", Role.VIEWER, None),
        ("alice", Role.SUBMITTER, None),
        ("bob", Role.SUBMITTER, None),
        ("brief", Role.VIEWER, EXPIRES_IN),
        ("newbie", Role.ENROL, EXPIRES_IN),
    ):
        issued = create_token_in_file(path, who, role, expires_in_seconds=expires, now=T0)
        secrets[who], ids[who] = issued.secret, issued.record.token_id
    clock = FakeClock(T0)
    init_ca(tmp_path / "pki")
    app = create_app(path, SETTINGS, clock=clock, enrolment_ca=load_ca(tmp_path / "pki"))
    with TestClient(app) as client:
        yield Fleet(client, clock, seeded, path, secrets, ids)


def worker_hello(worker_id: str) -> str:
    frame = encode(
        Hello(
            protocol_version=PROTOCOL_VERSION,
            worker_id=worker_id,
            session_key="k" * 32,
            capabilities=WorkerCapabilities(hostname="h", os="test", python_version="3"),
            slots=1,
        )
    )
    assert isinstance(frame, str)
    return frame


def concrete(route: str, seeded: Seeded) -> tuple[str, str]:
    method, template = route.split(" ", 1)
    url = template.format(
        task_id=seeded.queued_task,
        worker_id=seeded.worker_id,
        run_id=seeded.run_id,
        table="distributed_tasks",
        token_id="tok-0000000000000000",
    )
    return method, url


def test_every_route_is_classified(fleet: Fleet) -> None:
    routes = set(every_route(fleet.client.app))  # type: ignore[arg-type]
    assert routes - NOT_TOKEN_ROUTES == set(NEEDS)
    assert routes >= NOT_TOKEN_ROUTES


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer junk", "Basic YWRtaW46YWRtaW4=", "Bearer tfk_tok-0000000000000000_" + "A" * 43],
)
def test_no_route_but_health_answers_without_a_valid_token(
    fleet: Fleet, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for route, needs in NEEDS.items():
        method, url = concrete(route, fleet.seeded)
        response = fleet.client.request(method, url, headers=headers)
        if needs is None:
            assert response.status_code == 200, route
            detail_free = (
                {"status": "alive", "role": "leader"} if "live" in route else {"status": "ok"}
            )
            assert response.json() == detail_free  # detail-free without a token
            continue
        assert response.status_code == 401, (route, response.text)
        assert response.json()["error"]["code"] == "unauthenticated"


def test_each_role_reaches_what_it_may_and_is_refused_the_rest(fleet: Fleet) -> None:
    for route, needs in NEEDS.items():
        method, url = concrete(route, fleet.seeded)
        body: dict[str, Any] | None = {"query": "SELECT 1"} if route == "POST /api/v1/sql" else None
        if route == "POST /api/v1/tokens":
            body = {"name": "made-here", "role": "viewer"}
        if route == "POST /api/v1/tasks":
            body = {"type": "simulated", "config": {"duration_seconds": 0}}
        if route == "POST /api/v1/tasks/cancel":
            body = {"task_ids": ["no-such-task"]}
        if route == "POST /api/v1/tasks/{task_id}/cancel":
            url = "/api/v1/tasks/no-such-task/cancel"  # whose task: the test below
        if route == "GET /api/v1/tasks/{task_id}/log/stream":
            # An open task's stream lasts until the task ends (never, on a fake clock).
            url = "/api/v1/tasks/no-such-task/log/stream"
        for who, role in (
            ("viewer", Role.VIEWER),
            ("alice", Role.SUBMITTER),
            ("admin", Role.ADMIN),
        ):
            response = fleet.call(who, method, url, json=body)
            allowed = needs is None or role.includes(needs)
            if allowed:
                assert response.status_code not in (401, 403), (route, who, response.text)
            else:
                assert response.status_code == 403, (route, who, response.text)
                assert response.json()["error"]["code"] == "forbidden"
    health = fleet.call("viewer", "GET", "/api/v1/health").json()
    assert health["status"] == "ok"
    assert health["schema_version"] >= 5  # details with a token


def test_an_expired_token_is_refused_from_its_expiry_on(fleet: Fleet) -> None:
    assert fleet.call("brief", "GET", "/api/v1/workers").status_code == 200
    fleet.clock.advance(EXPIRES_IN - 1)
    assert fleet.call("brief", "GET", "/api/v1/workers").status_code == 200
    fleet.clock.advance(1)
    refused = fleet.call("brief", "GET", "/api/v1/workers")
    assert refused.status_code == 401
    assert "expired" in refused.json()["error"]["message"]


def test_a_revoked_token_is_refused_on_the_very_next_request(fleet: Fleet) -> None:
    assert fleet.call("viewer", "GET", "/api/v1/tasks").status_code == 200  # now known
    revoked = fleet.call("admin", "POST", f"/api/v1/tokens/{fleet.token_ids['viewer']}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] is not None
    refused = fleet.call("viewer", "GET", "/api/v1/tasks")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]["message"]
    assert fleet.call("admin", "POST", "/api/v1/tokens/tok-nope/revoke").status_code == 404


def test_a_token_made_through_the_api_works_at_once_and_its_secret_is_shown_once(
    fleet: Fleet,
) -> None:
    made = fleet.call(
        "admin",
        "POST",
        "/api/v1/tokens",
        json={"name": "ci", "role": "submitter", "expires_in_seconds": 60},
    )
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]
    assert secret.startswith("tfk_")
    answer = fleet.client.get("/api/v1/workers", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200
    listed = fleet.call("admin", "GET", "/api/v1/tokens").json()["tokens"]
    assert "ci" in {t["name"] for t in listed}
    assert secret not in str(listed)
    bad = fleet.call("admin", "POST", "/api/v1/tokens", json={"name": "a b", "role": "viewer"})
    assert bad.status_code == 422


def submit(fleet: Fleet, who: str, task_id: str) -> None:
    response = fleet.call(
        who,
        "POST",
        "/api/v1/tasks",
        json={"task_id": task_id, "type": "simulated", "requirements": {"hardware": ["rocm"]}},
    )  # stays queued
    assert response.status_code == 201, response.text


def test_a_submitter_cancels_its_own_tasks_and_no_one_elses(fleet: Fleet) -> None:
    submit(fleet, "alice", "alice-1")
    submit(fleet, "alice", "alice-2")
    submit(fleet, "bob", "bob-1")
    refused = fleet.call("bob", "POST", "/api/v1/tasks/alice-1/cancel")
    assert refused.status_code == 403
    assert refused.json()["error"]["details"] == [{"ids": ["alice-1"]}]
    refused = fleet.call(
        "bob", "POST", "/api/v1/tasks/cancel", json={"task_ids": ["bob-1", "alice-2"]}
    )
    assert refused.status_code == 403
    # Refused as a whole: bob's own task was not cancelled either.
    assert fleet.call("bob", "GET", "/api/v1/tasks/bob-1").json()["task"]["status"] == "queued"
    assert fleet.call("alice", "POST", "/api/v1/tasks/alice-1/cancel").status_code == 200
    assert fleet.call("bob", "POST", "/api/v1/tasks/bob-1/cancel").status_code == 200
    # Tasks from before tokens (no submitter) and anyone's: an admin's to cancel.
    assert (
        fleet.call("alice", "POST", f"/api/v1/tasks/{fleet.seeded.queued_task}/cancel").status_code
        == 403
    )
    assert fleet.call("admin", "POST", "/api/v1/tasks/alice-2/cancel").status_code == 200


def csr_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anything")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_the_audit_trail_holds_every_kind_of_event_and_no_secret(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    fleet.client.get("/api/v1/tasks")  # no token
    fleet.call("viewer", "POST", "/api/v1/workers/w/drain")  # wrong role
    submit(fleet, "alice", "audited-1")
    fleet.call("alice", "POST", "/api/v1/tasks/audited-1/cancel")
    worker = fleet.seeded.worker_id
    assert fleet.call("admin", "POST", f"/api/v1/workers/{worker}/drain").status_code == 200
    assert fleet.call("admin", "POST", f"/api/v1/workers/{worker}/undrain").status_code == 200
    made = fleet.call("admin", "POST", "/api/v1/tokens", json={"name": "temp", "role": "viewer"})
    fleet.call("admin", "POST", f"/api/v1/tokens/{made.json()['token']['token_id']}/revoke")
    too_many = [{"task_id": f"over-{n}", "type": "simulated"} for n in range(QUOTA + 1)]
    assert fleet.call("bob", "POST", "/api/v1/tasks", json=too_many).status_code == 429
    # The fake clock stands still: the viewer's bucket empties and stays empty.
    flood = [fleet.call("viewer", "GET", "/api/v1/workers").status_code for _ in range(110)]
    assert flood.count(429) == 110 - SETTINGS.rate_limit_burst
    # The worker channel: a hello with no credential, then a junk first frame.
    with fleet.client.websocket_connect("/api/v1/workers/connect") as socket:
        socket.send_text(worker_hello("no-credential"))
        assert '"unauthorized"' in socket.receive_text()
    with fleet.client.websocket_connect("/api/v1/workers/connect") as socket:
        socket.send_text("{not json")
        assert '"error"' in socket.receive_text()
    revoked = fleet.call(
        "admin", "POST", f"/api/v1/workers/{worker}/revoke", json={"reason": "stolen"}
    )
    assert revoked.status_code == 200, revoked.text
    junk = fleet.call("newbie", "POST", "/api/v1/workers/enrol", json={"csr": "junk"})
    assert junk.status_code == 422
    enrolled = fleet.call("newbie", "POST", "/api/v1/workers/enrol", json={"csr": csr_pem()})
    assert enrolled.status_code == 200, enrolled.text
    assert fleet.call("admin", "POST", "/api/v1/admin/backup").status_code == 200

    events = fleet.call("admin", "GET", "/api/v1/audit").json()["events"]
    assert {e["kind"] for e in events} == {kind.value for kind in AuditKind}
    by_kind = {e["kind"]: e for e in events}
    assert by_kind["auth_failed"]["detail"]["reason"] == "missing"
    assert by_kind["auth_failed"]["remote"]
    assert by_kind["denied"]["actor"] == "viewer"
    submitted = by_kind["tasks_submitted"]
    assert submitted["actor"] == "alice"
    assert submitted["credential_id"] == fleet.token_ids["alice"]
    assert submitted["detail"]["tasks"] == 1
    assert submitted["detail"]["types"] == ["simulated"]
    assert by_kind["worker_drained"]["detail"] == {"worker_id": worker}
    assert by_kind["quota_exceeded"]["actor"] == "bob"
    assert by_kind["quota_exceeded"]["detail"]["tasks"] == QUOTA + 1
    assert [e["credential_id"] for e in events if e["kind"] == "rate_limited"] == [
        fleet.token_ids["viewer"]  # once for the whole flood
    ]
    assert by_kind["worker_revoked"]["detail"] == {"worker_id": worker, "reason": "stolen"}
    assert by_kind["worker_revoked"]["actor"] == "admin"
    assert by_kind["worker_refused"]["detail"]["reason"] == "no_credential"
    assert by_kind["worker_refused"]["detail"]["claimed_id"] == "no-credential"
    assert by_kind["worker_refused"]["remote"]
    assert by_kind["worker_frame_rejected"]["detail"]["code"] == "malformed_frame"
    assert by_kind["backup_taken"]["actor"] == "admin"
    mine = fleet.call("admin", "GET", "/api/v1/audit", params={"actor": "alice"}).json()
    assert {e["actor"] for e in mine["events"]} == {"alice"}
    later = fleet.call(
        "admin", "GET", "/api/v1/audit", params={"since": "2100-01-01T00:00:00Z"}
    ).json()
    assert later["events"] == []
    assert (
        len(fleet.call("admin", "GET", "/api/v1/audit", params={"limit": 2}).json()["events"]) == 2
    )

    fleet.client.__exit__(None, None, None)  # stop the app: the file is complete
    everything = fleet.path.read_bytes()
    wal = Path(str(fleet.path) + ".wal")
    everything += wal.read_bytes() if wal.exists() else b""
    secrets = [*fleet.secrets.values(), made.json()["secret"]]
    for secret in secrets:
        assert secret.encode() not in everything
        assert secret.split("_", 2)[2].encode() not in everything  # not even the random part
        assert secret not in caplog.text
    assert fleet.token_ids["alice"].encode() in everything  # ids are stored, secrets never
