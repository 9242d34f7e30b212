"""Clients given several coordinator addresses end up on the leader (issue 13).

Real processes on loopback, over TLS with tokens: a DuckDB coordinator (the
leader), a port where nothing listens, and a tiny standby made here that
answers as a standby does (README, "Failover on PostgreSQL"): 503
``not_leader`` naming the leader, and the worker channel closed with code
4010 and the leader's URL.
The worker and the CLI are given the list; each must reach the leader and a
task must complete. The real failover between two coordinators on PostgreSQL
is tested on top of this by the leadership tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet, free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from testfleet.local_fleet import WorkerOptions
from testfleet.security.pki import server_files

pytestmark = [pytest.mark.integration]

LOOPBACK = "127.0.0.1"


def standby_app(leader: str) -> Starlette:
    """A standby coordinator as far as a client can tell, naming ``leader``."""

    async def api(request: Request) -> JSONResponse:
        path = request.url.path
        if path == "/api/v1/health/live":
            return JSONResponse({"status": "alive", "role": "standby"})
        if path == "/api/v1/health":
            return JSONResponse({"status": "standby", "leader": leader, "epoch": 2}, 503)
        return JSONResponse(
            {
                "error": {
                    "code": "not_leader",
                    "message": f"this coordinator is a standby; the leader is at {leader} "
                    "(epoch 2)",
                    "details": [{"leader": leader, "epoch": 2}],
                }
            },
            503,
            headers={"X-Testfleet-Leader": leader, "Retry-After": "1"},
        )

    async def channel(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(code=4010, reason=leader)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    return Starlette(
        routes=[
            WebSocketRoute("/api/v1/workers/connect", channel),
            Route("/{path:path}", api, methods=methods),
        ]
    )


@contextmanager
def standby(fleet: Fleet, leader: str) -> Iterator[str]:
    """Serve :func:`standby_app` on a free loopback port (TLS as the fleet); yields its URL."""
    port = free_port(LOOPBACK)
    files = server_files(fleet.pki) if fleet.pki is not None else None
    config = uvicorn.Config(
        standby_app(leader),
        host=LOOPBACK,
        port=port,
        log_level="warning",
        ssl_certfile=None if files is None else str(files.cert),
        ssl_keyfile=None if files is None else str(files.key),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="standby", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the standby failed to start"
        assert time.monotonic() < deadline, "the standby did not start within 30 s"
        time.sleep(0.05)
    try:
        yield f"{'https' if fleet.pki is not None else 'http'}://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def dead_address(fleet: Fleet) -> str:
    return f"{'https' if fleet.pki is not None else 'http'}://{LOOPBACK}:{free_port(LOOPBACK)}"


def cli(fleet: Fleet, coordinators: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testfleet", *args, "--coordinator", coordinators],
        capture_output=True,
        text=True,
        env=fleet.env(),
        timeout=90,
        check=False,
    )


def submit_and_wait(fleet: Fleet, coordinators: str, task_id: str, tmp_path: Path) -> None:
    task = tmp_path / f"{task_id}.json"
    task.write_text(
        json.dumps({"task_id": task_id, "type": "simulated", "config": {"duration_seconds": 0.2}})
    )
    submitted = cli(fleet, coordinators, "submit", str(task))
    assert submitted.returncode == 0, submitted.stderr
    waited = cli(fleet, coordinators, "wait", task_id, "--timeout", "60")
    assert waited.returncode == 0, (waited.stdout, waited.stderr)
    shown = cli(fleet, coordinators, "task", task_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["task"]["status"] == "completed"


def test_a_worker_and_the_cli_pass_over_a_dead_address(fleet: Fleet, tmp_path: Path) -> None:
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    coordinators = f"{dead_address(fleet)},{fleet.url}"
    fleet.start_worker(
        "list-w1", WorkerOptions(log_level="info", extra_args=["--coordinator", coordinators])
    )
    submit_and_wait(fleet, coordinators, "list-dead-first", tmp_path)


def test_a_standby_first_in_the_list_sends_the_worker_and_the_cli_to_the_leader(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    with standby(fleet, fleet.url) as standby_url:
        # The leader is not in the list: only the standby's answers lead there.
        coordinators = f"{standby_url},{dead_address(fleet)}"
        fleet.start_worker(
            "list-w2", WorkerOptions(log_level="info", extra_args=["--coordinator", coordinators])
        )
        submit_and_wait(fleet, coordinators, "list-standby-first", tmp_path)
        live = cli(fleet, coordinators, "workers", "--json")
        assert live.returncode == 0, live.stderr
        # `testfleet run` (pytest --fleet) too: three tests run on the worker.
        project = tmp_path / "project"
        (project / "tests").mkdir(parents=True)
        (project / "tests" / "test_three.py").write_text(
            "import pytest\n\n@pytest.mark.parametrize('i', range(3))\ndef test_i(i):\n"
            "    assert i < 3\n"
        )
        ran = subprocess.run(
            [sys.executable, "-m", "testfleet", "run", "--coordinator", coordinators, "tests"],
            cwd=project,
            env=fleet.env(),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert ran.returncode == 0, (ran.stdout, ran.stderr)
        assert "3 passed" in ran.stdout
    assert f"following the leader at {fleet.url}" in fleet.tail("list-w2")


def test_only_a_standby_naming_nobody_is_a_clear_error(fleet: Fleet) -> None:
    with standby(fleet, "") as standby_url:
        refused = cli(fleet, standby_url, "tasks")
    assert refused.returncode == 2
    assert "no coordinator is leading" in refused.stderr
    assert "Traceback" not in refused.stderr
