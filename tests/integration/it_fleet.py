"""A real fleet on loopback for integration tests: :class:`testfleet.local_fleet.LocalFleet`
with the settings and checks tests want.

Every process is started as ``python -m testfleet ...`` (as ``testfleet demo``
does) with its output captured to a file under the test's ``tmp_path``.
:meth:`Fleet.close` kills everything the fleet started, whatever happened; the
``fleet`` fixture in ``conftest.py`` calls it and attaches the log tails to a
failing test's report.

Nothing here measures speed: :meth:`Fleet.wait_until` polls a condition with
short sleeps up to a generous bound and fails saying what it waited for.

A fleet runs over TLS with worker certificates and tokens by default, as a
real fleet should (the issue: "the existing integration tests keep passing
over TLS with tokens"): its CA, server and worker certificates are made once
per fleet in ``<tmp_path>/pki``. ``Fleet(tmp_path, tls=False)`` is for a test
about plain HTTP itself. Tests that speak to the coordinator below the CLI
and :attr:`client` (raw sockets, ``httpx``, a raw WebSocket peer) use
:meth:`Fleet.ssl_context`, :meth:`Fleet.http`, :meth:`Fleet.raw_connection`
and :attr:`Fleet.ws_url`, which work either way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

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
from testfleet.security.pki import ca_files, issue_worker, worker_files
from testfleet.security.tls import ClientTlsFiles, client_context
from testfleet.store import Store
from testfleet.worker.transports import Transport

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

    def __init__(
        self,
        tmp_path: Path,
        *,
        tls: bool = True,
        grpc: bool = False,
        worker_transport: Transport = Transport.WEBSOCKET,
    ) -> None:
        """``grpc``: the coordinator also serves the worker channel over gRPC, and
        ``start_worker(..., transport=Transport.GRPC)`` joins through it.
        ``worker_transport``: how workers join unless told (gRPC implies ``grpc``)."""
        grpc = grpc or worker_transport is Transport.GRPC
        super().__init__(tmp_path, cwd=tmp_path, tls=tls, grpc=grpc)
        self.worker_transport = worker_transport
        #: Extra pids to SIGKILL on close (e.g. a killed worker's orphaned child).
        self.extra_pids: set[int] = set()

    def worker_headers(self, worker_id: str) -> dict[str, str]:
        """The upgrade headers of a raw worker socket claiming ``worker_id``: its
        worker token (every worker needs a credential; made on first use)."""
        secret = read_token_file(self.worker_tokens.for_worker(worker_id))
        return {"Authorization": f"Bearer {secret}"}

    # ------------------------------------------------------------- raw access

    def ssl_context(self, worker_id: str | None = None) -> ssl.SSLContext | None:
        """A context that verifies the coordinator with the fleet's CA and, for
        ``worker_id``, presents that worker's certificate (issued on first use);
        ``None`` for a plain-HTTP fleet."""
        if self.pki is None:
            return None
        files = ClientTlsFiles(ca=ca_files(self.pki).cert)
        if worker_id is not None:
            issued = worker_files(self.pki, worker_id)
            if not issued.cert.exists():
                issue_worker(self.pki, worker_id)
            files = ClientTlsFiles(files.ca, issued.cert, issued.key)
        return client_context(files)

    def http(self, *, token: bool = True, **options: Any) -> httpx.Client:
        """An ``httpx`` client for the coordinator (verifying its certificate), with
        the fleet's admin token unless ``token`` is false."""
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        verify: ssl.SSLContext | bool = self.ssl_context() or True
        return httpx.Client(base_url=self.url, headers=headers, verify=verify, **options)

    @property
    def ws_url(self) -> str:
        """The worker channel's address (``wss://`` over TLS)."""
        scheme = "wss" if self.pki is not None else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/api/v1/workers/connect"

    def grpc_credentials(self, worker_id: str) -> tuple[bytes, bytes, bytes]:
        """PEM bytes a raw gRPC peer presents as ``worker_id`` over TLS: the CA,
        and that worker's certificate and key (issued on first use)."""
        assert self.pki is not None, "a plain fleet's gRPC peers need no credentials"
        issued = worker_files(self.pki, worker_id)
        if not issued.cert.exists():
            issue_worker(self.pki, worker_id)
        ca = ca_files(self.pki).cert.read_bytes()
        return ca, issued.cert.read_bytes(), issued.key.read_bytes()

    def raw_connection(self, timeout: float | None = None) -> socket.socket:
        """A connected socket to the coordinator, its TLS handshake done over TLS:
        for tests that write HTTP bytes by hand."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        context = self.ssl_context()
        if context is None:
            return raw
        try:
            return context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise

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
        transport: Transport | None = None,
    ) -> subprocess.Popen[bytes]:
        options = options or WorkerOptions(
            slots=slots,
            tags=dict(tags or {}),
            codec=Codec(codec),
            log_level="info",
            transport=transport or self.worker_transport,
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
