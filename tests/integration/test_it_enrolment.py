"""Enrolling workers with one-time tokens, with real processes over TLS on loopback.

One TLS coordinator started with ``--enrol-ca-dir`` (the fleet's own CA) serves
the module. A worker started with ``--enrol-token`` and ``--cert-dir`` makes its
key, enrols, and runs tasks; started again it uses its saved certificate
without the token. A used token and an expired one are refused (401) and
audited, and nothing is saved for them.
"""

from __future__ import annotations

import datetime
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from it_fleet import HEARTBEAT_INTERVAL, RELAXED_HEARTBEAT_TIMEOUT, Fleet

from testfleet.local_fleet import CoordinatorOptions
from testfleet.security.credentials import TOKEN_ENV
from testfleet.security.pki import ca_files

pytestmark = [pytest.mark.integration]

ENROLLED = "enrolled-1"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    running = Fleet(Path(tmp_path_factory.mktemp("enrol")), tls=True)
    try:
        assert running.pki is not None
        running.start_coordinator(
            CoordinatorOptions(
                heartbeat_interval=HEARTBEAT_INTERVAL,
                heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT,
                log_level="info",
                extra_args=["--enrol-ca-dir", str(running.pki)],
            )
        )
        yield running
    finally:
        running.close()


def worker_argv(fleet: Fleet, cert_dir: Path, *extra: str) -> list[str]:
    assert fleet.pki is not None
    return [
        sys.executable,
        "-m",
        "testfleet",
        "worker",
        *("--coordinator", fleet.url, "--ca", str(ca_files(fleet.pki).cert)),
        *("--cert-dir", str(cert_dir), "--work-dir", str(fleet.work_dir / cert_dir.name)),
        *("--no-probe-torch", "--no-probe-backends", "--log-level", "info"),
        *extra,
    ]


def run_worker(fleet: Fleet, argv: list[str], seconds: float = 60) -> str:
    """A worker command expected to stop by itself; its exit code and output."""
    env = {k: v for k, v in fleet.env().items() if k != TOKEN_ENV}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds, env=env)
    return f"rc={done.returncode}\n{done.stdout}{done.stderr}"


def enrol_token(fleet: Fleet, name: str, expires: float | None = None) -> dict[str, Any]:
    return fleet.client.create_token(name, "enrol", expires)


def audit_of(fleet: Fleet, token_id: str) -> list[dict[str, Any]]:
    return [e for e in fleet.client.audit(limit=10_000) if e["credential_id"] == token_id]


def run_a_task(fleet: Fleet, task_id: str) -> None:
    ids = fleet.client.submit(
        {"task_id": task_id, "type": "command", "config": {"argv": ["echo", "enrolled"]}}
    )
    (task,) = fleet.wait_terminal(ids).values()
    assert task["status"] == "completed", task
    assert task["worker_id"] == ENROLLED


def test_a_worker_enrols_runs_tasks_and_restarts_on_its_saved_certificate(fleet: Fleet) -> None:
    made = enrol_token(fleet, ENROLLED)
    token = made["token"]
    created = datetime.datetime.fromisoformat(token["created"].replace("Z", "+00:00"))
    expires = datetime.datetime.fromisoformat(token["expires"].replace("Z", "+00:00"))
    assert expires - created == datetime.timedelta(hours=1)  # the default for enrol tokens
    cert_dir = fleet.root / "creds"

    # --worker-id left out: the id is the token's.
    fleet.start(ENROLLED, worker_argv(fleet, cert_dir, "--enrol-token", made["secret"]))
    fleet.wait_for_workers([ENROLLED])
    assert "enrolled as enrolled-1" in fleet.tail(ENROLLED)
    assert sorted(p.name for p in cert_dir.iterdir()) == [f"{ENROLLED}.key", f"{ENROLLED}.pem"]
    assert stat.S_IMODE((cert_dir / f"{ENROLLED}.key").stat().st_mode) == 0o600
    run_a_task(fleet, "enrolled-task-1")

    events = audit_of(fleet, token["token_id"])
    (enrolled,) = [e for e in events if e["kind"] == "worker_enrolled"]
    assert enrolled["detail"]["worker_id"] == ENROLLED
    assert enrolled["detail"]["serial"]
    assert enrolled["remote"].startswith("127.0.0.1:")

    # The token is spent: another worker presenting it is refused, and audited.
    out = run_worker(
        fleet, worker_argv(fleet, fleet.root / "thief", "--enrol-token", made["secret"])
    )
    assert out.startswith("rc=2"), out
    assert "enrolment token already used" in out
    assert "Traceback" not in out
    assert not (fleet.root / "thief").exists()
    refused = [e for e in audit_of(fleet, token["token_id"]) if e["outcome"] == "refused"]
    assert refused, events
    assert refused[-1]["detail"]["reason"] == "revoked"
    assert "/api/v1/workers/enrol" in refused[-1]["detail"]["request"]

    # Restarted without the token: it uses what it saved.
    fleet.stop(ENROLLED)
    key_before = (cert_dir / f"{ENROLLED}.key").read_bytes()
    fleet.start(ENROLLED, worker_argv(fleet, cert_dir))
    fleet.wait_for_workers([ENROLLED])
    assert fleet.tail(ENROLLED).count("enrolled as") == 1  # the first start's only
    assert (cert_dir / f"{ENROLLED}.key").read_bytes() == key_before
    run_a_task(fleet, "enrolled-task-2")
    enrolments = [e for e in fleet.client.audit(limit=10_000) if e["kind"] == "worker_enrolled"]
    assert len(enrolments) == 1


def test_an_expired_enrol_token_is_refused_and_audited(fleet: Fleet) -> None:
    made = enrol_token(fleet, "late-worker", expires=1)
    time.sleep(1.5)  # past the token's one-second life, on the coordinator's wall clock
    cert_dir = fleet.root / "late"
    out = run_worker(fleet, worker_argv(fleet, cert_dir, "--enrol-token", made["secret"]))
    assert out.startswith("rc=2"), out
    assert "expired" in out
    assert "Traceback" not in out
    assert not cert_dir.exists()
    (refused,) = audit_of(fleet, made["token"]["token_id"])
    assert (refused["kind"], refused["outcome"]) == ("auth_failed", "refused")
    assert refused["detail"]["reason"] == "expired"
    assert "late-worker" not in {w["worker_id"] for w in fleet.client.workers()}
