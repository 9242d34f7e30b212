"""Every worker needs a credential (issue 10): real worker processes on loopback,
plain HTTP, worker tokens; refusals are audited while real workers carry on, and
``testfleet workers revoke`` cuts a running worker off at once.

One coordinator and one real worker (token-based, as ``LocalFleet`` starts
them without TLS) serve the whole module; one last test revokes a worker that
holds a certificate, on a fleet of its own over TLS.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet

from testfleet.security.credentials import TOKEN_ENV, TOKEN_FILE_ENV, write_token_file

pytestmark = [pytest.mark.integration]

REAL_WORKER = "cred-real"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # Plain HTTP: worker tokens are what this module is about (the integration
    # fleets run over TLS with certificates by default).
    fleet = Fleet(Path(tmp_path_factory.mktemp("credentials")), tls=False)
    try:
        fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
        fleet.start_worker(REAL_WORKER, slots=2)
        yield fleet
    finally:
        fleet.close()


def worker_process(fleet: Fleet, worker_id: str, *args: str, seconds: float = 60) -> str:
    """``testfleet worker`` as ``worker_id`` with ``args``, no API token in its
    environment; its exit status and output."""
    argv = [sys.executable, "-m", "testfleet", "worker", "-c", fleet.url, "--no-probe-torch"]
    argv.append("--no-probe-backends")  # a Chromium per start: not what these tests test
    argv += ["--worker-id", worker_id, "--work-dir", str(fleet.work_dir / worker_id), *args]
    env = {k: v for k, v in fleet.env().items() if k not in (TOKEN_ENV, TOKEN_FILE_ENV)}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds, env=env)
    except subprocess.TimeoutExpired as exc:
        return f"rc=timeout\n{exc.stdout!r}{exc.stderr!r}"
    return f"rc={done.returncode}\n{done.stdout}{done.stderr}"


def refused_events(fleet: Fleet, claimed_id: str) -> list[dict[str, Any]]:
    events = fleet.client.audit(limit=1000)
    return [
        e
        for e in events
        if e["kind"] == "worker_refused" and e["detail"].get("claimed_id") == claimed_id
    ]


def assert_real_worker_runs(fleet: Fleet, label: str) -> None:
    task_ids = [f"{label}-{n}" for n in range(4)]
    fleet.client.submit(
        [
            {"task_id": t, "type": "simulated", "config": {"duration_seconds": 0.05}}
            for t in task_ids
        ]
    )
    finished = fleet.wait_terminal(task_ids)
    assert {t["status"] for t in finished.values()} == {"completed"}, finished
    workers = {w["worker_id"]: w for w in fleet.client.workers()}
    assert workers[REAL_WORKER]["connected"] is True


def test_a_plain_http_worker_token_from_loopback_is_enough(fleet: Fleet) -> None:
    argv = fleet.worker_argv(REAL_WORKER, fleet_options())
    assert "--token-file" in argv
    assert "--cert" not in argv
    token_file = fleet.worker_tokens.path(REAL_WORKER)
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert_real_worker_runs(fleet, "loopback")


def fleet_options() -> Any:
    from testfleet.local_fleet import WorkerOptions

    return WorkerOptions()


def test_a_worker_with_no_credential_is_refused_and_audited(fleet: Fleet) -> None:
    out = worker_process(fleet, "cred-nobody")
    assert out.startswith("rc=2"), out
    assert "presented no credential" in out
    assert "--token" in out
    assert "testfleet certs worker" in out
    assert "Traceback" not in out
    (event,) = refused_events(fleet, "cred-nobody")
    assert event["detail"]["reason"] == "no_credential"
    assert event["remote"].startswith("127.0.0.1:")
    assert event["outcome"] == "refused"
    assert "cred-nobody" not in {w["worker_id"] for w in fleet.client.workers()}
    assert_real_worker_runs(fleet, "after-nobody")


def test_a_worker_with_another_ids_token_is_refused(fleet: Fleet) -> None:
    other = fleet.worker_tokens.for_worker("cred-other")
    out = worker_process(fleet, "cred-thief", "--token-file", str(other))
    assert out.startswith("rc=2"), out
    assert "does not match the worker token, which is for 'cred-other'" in out
    (event,) = refused_events(fleet, "cred-thief")
    assert event["detail"]["reason"] == "id_mismatch"
    assert event["detail"]["token_worker_id"] == "cred-other"
    assert event["credential_id"].startswith("tok-")
    assert_real_worker_runs(fleet, "after-thief")


def test_a_token_of_another_role_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    made = fleet.client.create_token("cred-viewer", "viewer")
    token_file = write_token_file(tmp_path / "viewer.token", made["secret"])
    out = worker_process(fleet, "cred-viewer", "--token-file", str(token_file))
    assert out.startswith("rc=2"), out
    assert "has role viewer" in out
    assert "--role worker" in out
    (event,) = refused_events(fleet, "cred-viewer")
    assert event["detail"]["reason"] == "wrong_role"
    assert event["credential_id"] == made["token"]["token_id"]
    assert made["secret"] not in str(fleet.client.audit(limit=1000))


def test_a_revoked_token_is_refused_on_the_next_connect(fleet: Fleet) -> None:
    token_file = fleet.worker_tokens.for_worker("cred-short")
    tokens = [t for t in fleet.client.list_tokens() if t["name"] == "cred-short"]
    fleet.client.revoke_token(tokens[0]["token_id"])
    out = worker_process(fleet, "cred-short", "--token-file", str(token_file))
    assert out.startswith("rc=2"), out
    assert "the worker token was revoked" in out
    (event,) = refused_events(fleet, "cred-short")
    assert event["detail"]["reason"] == "bad_token"


def test_workers_revoke_closes_a_running_worker_and_refuses_it_afterwards(fleet: Fleet) -> None:
    victim = fleet.start_worker("cred-victim", tags={"pool": "victim"})
    fleet.client.submit(
        [
            {
                "task_id": "held-by-victim",
                "type": "simulated",
                "requirements": {"tags": {"pool": "victim"}},
                # Long enough that the revoke lands while it runs, short
                # enough to finish on the rescuer.
                "config": {"duration_seconds": 10},
            }
        ]
    )
    fleet.wait_until(
        lambda: fleet.task("held-by-victim")["task"]["status"] == "running",
        what="the victim to run its task",
    )

    done = subprocess.run(
        [sys.executable, "-m", "testfleet", "workers", "revoke", "cred-victim", "--reason", "test"],
        capture_output=True,
        text=True,
        env=fleet.env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "revoked cred-victim" in done.stdout
    assert "1 token(s) revoked" in done.stdout

    # Closed at once: the worker exits with the reason, well before any heartbeat timeout.
    assert victim.wait(30) == 2
    log = fleet.tail("cred-victim")
    assert "the coordinator refused this worker" in log
    assert "revoked" in log
    workers = {w["worker_id"]: w for w in fleet.client.workers()}
    assert workers["cred-victim"]["status"] == "revoked"
    events = [e for e in fleet.client.audit(limit=1000) if e["kind"] == "worker_revoked"]
    assert [e["detail"] for e in events] == [{"worker_id": "cred-victim", "reason": "test"}]

    # Its task is requeued and finishes on another worker.
    fleet.start_worker("cred-rescue", tags={"pool": "victim"})
    finished = fleet.wait_terminal(["held-by-victim"])
    assert finished["held-by-victim"]["status"] == "completed"
    attempts = fleet.task("held-by-victim")["attempts"]
    assert [(a["worker_id"], a["status"]) for a in attempts] == [
        ("cred-victim", "lost"),
        ("cred-rescue", "completed"),
    ]

    # Restarted with its (revoked) token: refused at once.
    out = worker_process(
        fleet, "cred-victim", "--token-file", str(fleet.worker_tokens.path("cred-victim"))
    )
    assert out.startswith("rc=2"), out
    assert "revoked" in out
    assert_real_worker_runs(fleet, "after-revoke")


def test_a_revoked_certificate_is_refused(tmp_path: Path) -> None:
    """Revoking an id cuts off a worker that joined with a certificate too: its
    socket closes at once, and the same certificate is refused from then on."""
    with Fleet(tmp_path / "tls-revoke") as tls_fleet:
        tls_fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
        victim = tls_fleet.start_worker("cert-victim")  # waits until it is connected
        revoked = tls_fleet.client.revoke_worker("cert-victim", reason="laptop stolen")
        assert revoked["worker_id"] == "cert-victim", revoked
        assert victim.wait(30) == 2
        assert "revoked" in tls_fleet.tail("cert-victim")

        restarted = tls_fleet.start_worker("cert-victim", wait=False)  # the same certificate
        assert restarted.wait(60) == 2
        assert "revoked by an admin" in tls_fleet.tail("cert-victim")
        refused = [
            e
            for e in tls_fleet.client.audit(limit=1000)
            if e["kind"] == "worker_refused" and e["detail"].get("claimed_id") == "cert-victim"
        ]
        assert refused, "the refused certificate is audited"
        assert refused[-1]["detail"]["reason"] == "revoked"
        assert refused[-1]["detail"]["certified_id"] == "cert-victim"
