"""A real fleet on loopback for integration tests: :class:`testfleet.local_fleet.LocalFleet`
with the settings and checks tests want.

Every process is started as ``python -m testfleet ...`` (as ``testfleet demo``
does) with its output captured to a file under the test's ``tmp_path``.
:meth:`Fleet.close` kills everything the fleet started, whatever happened; the
``fleet`` fixture in ``conftest.py`` calls it and attaches the log tails to a
failing test's report.

Nothing here measures speed: :meth:`Fleet.wait_until` polls a condition with
short sleeps up to a generous bound and fails saying what it waited for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from testfleet.coordinator.startup import free_port
from testfleet.domain.enums import Codec, TaskStatus
from testfleet.local_fleet import (
    START_TIMEOUT_SECONDS,
    CoordinatorOptions,
    LocalFleet,
    WaitTimeout,
    WorkerOptions,
    tail,
)
from testfleet.security.credentials import read_token_file
from testfleet.store import Store

__all__ = [
    "DEFAULT_WAIT_SECONDS",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_TIMEOUT",
    "RELAXED_HEARTBEAT_TIMEOUT",
    "Fleet",
    "WaitTimeout",
    "free_port",
    "pid_alive",
    "tail",
]

#: Upper bounds on conditions (never expectations of speed).
DEFAULT_WAIT_SECONDS = START_TIMEOUT_SECONDS
HEARTBEAT_INTERVAL = 0.2
HEARTBEAT_TIMEOUT = 2.0
#: For tests that do not exercise loss detection: a starved CI machine must not
#: make a healthy worker look lost and so change a task's attempt count.
RELAXED_HEARTBEAT_TIMEOUT = 10.0
#: A test of clean shutdown fails when a process needs longer than this.
STOP_SECONDS = 30.0
TERMINAL = frozenset(s.value for s in TaskStatus if s.is_terminal)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (non-zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    state = stat[stat.rfind(b")") + 2 :].split()[:1]
    return state not in ([b"Z"], [b"X"])


class Fleet(LocalFleet):
    """Coordinator and worker processes sharing one DuckDB file and port, under
    ``tmp_path``: fast heartbeats, ``info`` logs, and a strict clean stop."""

    def __init__(self, tmp_path: Path, *, tls: bool = False) -> None:
        super().__init__(tmp_path, cwd=tmp_path, tls=tls)
        #: Extra pids to SIGKILL on close (e.g. a killed worker's orphaned child).
        self.extra_pids: set[int] = set()

    def worker_headers(self, worker_id: str) -> dict[str, str]:
        """The upgrade headers of a raw worker socket claiming ``worker_id``: its
        worker token (every worker needs a credential; made on first use)."""
        secret = read_token_file(self.worker_tokens.for_worker(worker_id))
        return {"Authorization": f"Bearer {secret}"}

    def env(self) -> dict[str, str]:
        env = super().env()
        # CLI commands run by tests must not wrap at the terminal's width.
        env.pop("COLUMNS", None)
        return env

    def start_coordinator(
        self,
        options: CoordinatorOptions | None = None,
        *,
        wait: bool = True,
        timeout: float = START_TIMEOUT_SECONDS,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
    ) -> subprocess.Popen[bytes]:
        options = options or CoordinatorOptions(
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            log_level="info",
        )
        return super().start_coordinator(options, wait=wait, timeout=timeout)

    def start_worker(
        self,
        worker_id: str,
        options: WorkerOptions | None = None,
        *,
        name: str | None = None,
        wait: bool = True,
        timeout: float = START_TIMEOUT_SECONDS,
        slots: int = 1,
        tags: Mapping[str, str] | None = None,
        codec: str = "json",
    ) -> subprocess.Popen[bytes]:
        options = options or WorkerOptions(
            slots=slots, tags=dict(tags or {}), codec=Codec(codec), log_level="info"
        )
        return super().start_worker(worker_id, options, name=name, wait=wait, timeout=timeout)

    def stop(
        self,
        target: str | subprocess.Popen[bytes],
        *,
        grace: float = STOP_SECONDS,
        strict: bool = True,
    ) -> int:
        """SIGTERM and wait (a clean shutdown); a process that needs SIGKILL fails the test."""
        return super().stop(target, grace=grace, strict=strict)

    def stop_all(self, *, grace: float = STOP_SECONDS, strict: bool = True) -> None:
        super().stop_all(grace=grace, strict=strict)

    def close(self) -> None:
        super().close()
        for pid in self.extra_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------- API access

    def task(self, task_id: str) -> dict[str, Any]:
        return self.client.get_task(task_id)

    def wait_terminal(
        self, task_ids: Sequence[str], timeout: float = DEFAULT_WAIT_SECONDS
    ) -> dict[str, dict[str, Any]]:
        """Wait until every task is terminal; return their task documents by id."""
        wanted = set(task_ids)

        def done() -> dict[str, dict[str, Any]] | None:
            found: dict[str, dict[str, Any]] = {}
            offset = 0
            while True:
                page = self.client.list_tasks(limit=1000, offset=offset)
                for task in page["tasks"]:
                    if task["task_id"] in wanted:
                        found[task["task_id"]] = task
                offset += len(page["tasks"])
                if not page["tasks"] or offset >= page["total"]:
                    break
            if len(found) == len(wanted) and all(t["status"] in TERMINAL for t in found.values()):
                return found
            return None

        return self.wait_until(done, timeout, f"{len(wanted)} task(s) to finish", poll=0.25)

    def open_store(self) -> Store:
        """The DuckDB file, once the coordinator has exited (only one process may open it)."""
        coordinator = self.processes.get("coordinator")
        assert coordinator is None or coordinator.poll() is not None, "stop the coordinator first"
        return Store(self.db)
