"""A real fleet on loopback for integration tests: coordinator and worker processes.

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
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from testfleet.client import COORDINATOR_ENV, FleetClient, FleetError
from testfleet.domain.enums import TaskStatus
from testfleet.store import Store

T = TypeVar("T")

#: Upper bounds on conditions (never expectations of speed).
DEFAULT_WAIT_SECONDS = 60.0
HEARTBEAT_INTERVAL = 0.2
HEARTBEAT_TIMEOUT = 2.0
#: For tests that do not exercise loss detection: a starved CI machine must not
#: make a healthy worker look lost and so change a task's attempt count.
RELAXED_HEARTBEAT_TIMEOUT = 10.0
TERMINAL = frozenset(s.value for s in TaskStatus if s.is_terminal)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return data[-limit:].decode("utf-8", errors="replace")


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


class WaitTimeout(AssertionError):
    """A condition did not hold within its (generous) bound."""


class Fleet:
    """Coordinator and worker processes sharing one DuckDB file and port."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.db = tmp_path / "fleet.duckdb"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work_dir = tmp_path / "work"
        self.logs_dir = tmp_path / "logs"
        self.logs_dir.mkdir(exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.log_paths: dict[str, Path] = {}
        #: Extra pids to SIGKILL on close (e.g. a killed worker's orphaned child).
        self.extra_pids: set[int] = set()
        self._handles: list[IO[bytes]] = []
        self._client: FleetClient | None = None
        self._starts = 0

    # ------------------------------------------------------------- processes

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[COORDINATOR_ENV] = self.url
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("COLUMNS", None)
        return env

    def _spawn(self, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
        old = self.processes.get(name)
        if old is not None and old.poll() is None:
            raise AssertionError(f"{name} is still running; stop it before starting another")
        self._starts += 1
        log = self.logs_dir / f"{name}.log"
        handle = log.open("ab")
        handle.write(f"=== start #{self._starts}: {' '.join(args)}\n".encode())
        handle.flush()
        self._handles.append(handle)
        process = subprocess.Popen(
            [sys.executable, "-m", "testfleet", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(),
            cwd=self.root,
        )
        self.processes[name] = process
        self.log_paths[name] = log
        return process

    def start_coordinator(
        self,
        *,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        wait: bool = True,
    ) -> subprocess.Popen[bytes]:
        process = self._spawn(
            "coordinator",
            [
                "coordinator",
                "--db",
                str(self.db),
                "--port",
                str(self.port),
                "--heartbeat-interval",
                str(heartbeat_interval),
                "--heartbeat-timeout",
                str(heartbeat_timeout),
                "--log-level",
                "info",
            ],
        )
        if wait:
            self.wait_until(
                self._healthy, DEFAULT_WAIT_SECONDS, "the coordinator to answer /health"
            )
        return process

    def _healthy(self) -> bool:
        coordinator = self.processes.get("coordinator")
        if coordinator is not None and coordinator.poll() is not None:
            raise AssertionError(
                f"the coordinator exited with {coordinator.returncode}:\n"
                + tail(self.log_paths["coordinator"])
            )
        try:
            return self.client.health()["status"] == "ok"
        except FleetError:
            return False

    def start_worker(
        self,
        worker_id: str,
        slots: int = 1,
        tags: dict[str, str] | None = None,
        *,
        wait: bool = True,
        codec: str = "json",
    ) -> subprocess.Popen[bytes]:
        args = [
            "worker",
            "--coordinator",
            self.url,
            "--slots",
            str(slots),
            "--worker-id",
            worker_id,
            "--no-probe-torch",
            "--work-dir",
            str(self.work_dir / worker_id),
            "--log-level",
            "info",
            "--codec",
            codec,
        ]
        for key, value in (tags or {}).items():
            args += ["--tag", f"{key}={value}"]
        process = self._spawn(worker_id, args)
        if wait:
            self.wait_for_workers([worker_id])
        return process

    def wait_for_workers(
        self, worker_ids: Sequence[str], timeout: float = DEFAULT_WAIT_SECONDS
    ) -> None:
        wanted = set(worker_ids)

        def connected() -> bool:
            for worker_id in wanted:
                process = self.processes.get(worker_id)
                if process is not None and process.poll() is not None:
                    raise AssertionError(
                        f"worker {worker_id} exited with {process.returncode}:\n"
                        + tail(self.log_paths[worker_id])
                    )
            seen = {w["worker_id"] for w in self.client.workers() if w["connected"]}
            return wanted <= seen

        self.wait_until(connected, timeout, f"workers {sorted(wanted)} to connect")

    def kill(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL) and, for SIGKILL, reap the process."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
        if sig == signal.SIGKILL:
            process.wait(30)

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
        """SIGTERM and wait (a clean shutdown); SIGKILL only if it does not go in time."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)
                raise AssertionError(
                    f"process {process.args} ignored SIGTERM for {timeout} s"
                ) from None
        return process.returncode

    def stop_all(self) -> None:
        """Workers first, then the coordinator, each with SIGTERM (the file is then free)."""
        for name, process in self.processes.items():
            if name != "coordinator":
                self.stop(process)
        coordinator = self.processes.get("coordinator")
        if coordinator is not None:
            self.stop(coordinator)
        self.close_client()

    def close(self) -> None:
        """Kill everything this fleet started (idempotent; used by the fixture)."""
        self.close_client()
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
        for pid in self.extra_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for handle in self._handles:
            handle.close()
        self._handles.clear()

    # ------------------------------------------------------------- API access

    @property
    def client(self) -> FleetClient:
        if self._client is None:
            self._client = FleetClient(self.url, timeout=30.0)
        return self._client

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def wait_until(
        self,
        predicate: Callable[[], T],
        timeout: float = DEFAULT_WAIT_SECONDS,
        what: str = "a condition",
        poll: float = 0.1,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy; return that value."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            value: T | None
            try:
                value = predicate()
            except FleetError as exc:  # e.g. a coordinator restarting
                value, last_error = None, exc
            if value:
                return value
            if time.monotonic() > deadline:
                note = f" (last error: {last_error})" if last_error else ""
                raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}{note}")
            time.sleep(poll)

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

    def log_report(self) -> str:
        parts = []
        for name, path in self.log_paths.items():
            process = self.processes[name]
            parts.append(f"----- {name} (exit {process.poll()}) {path}\n{tail(path)}")
        return "\n".join(parts)
