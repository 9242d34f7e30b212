"""API tokens end to end: a real coordinator process, the CLI in processes of its own.

The fleet's admin token is made in the database file before the coordinator
starts (as ``testfleet tokens create --db`` does); the CLI then makes,
lists and revokes tokens through the API, a revoked token is refused on its
next request, the audit log shows it all, and once everything has stopped no
secret is in the database file, its WAL, or any process's log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from it_fleet import Fleet

pytestmark = [pytest.mark.integration]


def cli(fleet: Fleet, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = fleet.env()
    env.pop("TESTFLEET_TOKEN", None)
    if token is not None:
        env["TESTFLEET_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "testfleet", *args],
        capture_output=True, text=True, env=env, cwd=fleet.root, timeout=90, check=False,
    )  # fmt: skip


def test_tokens_through_the_cli_and_no_secret_left_anywhere(fleet: Fleet) -> None:
    fleet.start_coordinator()
    admin = fleet.token
    refused = cli(fleet, "tasks")
    assert refused.returncode == 2
    assert "no token given" in refused.stderr

    made = cli(fleet, "tokens", "create", "--role", "submitter", "--name", "ci", "--json",
               token=admin)  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["secret"]
    token_id = json.loads(made.stdout)["token"]["token_id"]
    ok = subprocess.run(
        [sys.executable, "-m", "testfleet", "submit", "-"],
        input='{"task_id": "by-ci", "type": "simulated"}', capture_output=True, text=True,
        env={**fleet.env(), "TESTFLEET_TOKEN": secret}, timeout=90, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    forbidden = cli(fleet, "drain", "nobody", token=secret)
    assert forbidden.returncode == 2
    assert "needs admin" in forbidden.stderr

    # A token file: private, or refused naming the fix.
    token_file = fleet.root / "ci.token"
    token_file.write_text(secret + "\n")
    token_file.chmod(0o644)
    loose = cli(fleet, "tasks", "--token-file", str(token_file))
    assert loose.returncode == 2
    assert f"chmod 600 {token_file}" in loose.stderr
    token_file.chmod(0o600)
    assert cli(fleet, "tasks", "--token-file", str(token_file)).returncode == 0

    listed = cli(fleet, "tokens", "list", "--json", token=admin)
    assert {t["name"] for t in json.loads(listed.stdout)} == {"local-fleet-admin", "ci"}
    assert cli(fleet, "tokens", "revoke", token_id, token=admin).returncode == 0
    gone = cli(fleet, "tasks", "--token", secret)
    assert gone.returncode == 2
    assert "revoked" in gone.stderr

    audit = json.loads(cli(fleet, "audit", "--json", token=admin).stdout)
    kinds = {e["kind"] for e in audit}
    assert {"token_created", "token_revoked", "tasks_submitted", "auth_failed", "denied"} <= kinds
    assert json.loads(cli(fleet, "audit", "--actor", "ci", "--json", token=admin).stdout)
    assert cli(fleet, "audit", token=admin).returncode == 0  # the table for people

    fleet.stop_all()
    files = [fleet.db, Path(f"{fleet.db}.wal"), *fleet.log_paths.values()]
    for path in files:
        if path.exists():
            data = path.read_bytes()
            for leaked in (admin, secret):
                assert leaked.encode() not in data, path
    assert os.stat(fleet.token_file).st_mode & 0o077 == 0
