"""A whole fleet on this machine: a coordinator and worker processes on loopback.

Callers: ``testfleet demo`` (``cli/demo.py``), the integration tests' fleet
(``tests/integration/it_fleet.py``) and the benchmarks that time a real fleet
(``benchmarks/dispatch.py``, ``fidelity.py``, ``gpu_check.py``, ``suite.py``).
Each used to start its processes its own way; this is the one way.

A :class:`LocalFleet` starts a coordinator (``python -m testfleet
coordinator``) on a free loopback port with one DuckDB file, workers
(``python -m testfleet worker``) joined to it, and any other process that
joins it (the dispatch benchmark hosts many agents in one), and waits until
they answer through the REST API. Every process writes to its own log file
under the log directory, appended across restarts with a header line per
start; :meth:`LocalFleet.tail` reads the end of one, and start-up failures
quote it.

Every process starts in a session of its own, so it leads a process group: a
worker's task processes and pytest sessions are its children, and ending the
fleet must end them too, whatever became of the worker. :meth:`LocalFleet.stop`
sends SIGTERM to the process alone (a worker then cancels and reports its
attempts, a coordinator commits and closes its file) and only after a grace
period SIGKILLs the whole group; :meth:`LocalFleet.close` kills whatever is
left. Used as a context manager, the fleet stops cleanly on exit, then closes.

Waiting polls the API with short sleeps up to a generous bound (never an
expectation of speed) and fails early, with the log's tail, when the process
it waits for has exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from testfleet.client import CA_ENV, COORDINATOR_ENV, FleetClient, FleetError
from testfleet.coordinator.startup import free_port
from testfleet.local_fleet_options import CoordinatorOptions as CoordinatorOptions
from testfleet.local_fleet_options import WorkerOptions as WorkerOptions
from testfleet.local_fleet_pki import LOOPBACK, coordinator_tls_args, fleet_pki, worker_tls_args
from testfleet.local_worker_tokens import WorkerTokenFiles
from testfleet.security.credentials import TOKEN_ENV, TOKEN_FILE_ENV, write_token_file
from testfleet.security.pki import ca_files
from testfleet.security.tokens import Role
from testfleet.worker.transports import Transport

T = TypeVar("T")

#: The coordinator's process (and log) name.
COORDINATOR = "coordinator"
#: Bound on a process coming up or a condition holding (not an expectation).
START_TIMEOUT_SECONDS = 60.0
#: How long a SIGTERMed process may take to shut down cleanly before its
#: group is killed: a worker reports its cancelled attempts and waits up to
#: 5 s for their acknowledgement, a coordinator commits its last turn.
STOP_GRACE_SECONDS = 20.0
#: Each poll while waiting gives up after this long, so that a port that
#: accepts but never answers cannot hide that the awaited process has exited.
PROBE_TIMEOUT_SECONDS = 5.0
#: How much of a log a failure quotes.
TAIL_BYTES = 4000


class LocalFleetError(Exception):
    """A fleet process did not come up or go down as it should; the message says which."""


class WaitTimeout(LocalFleetError):
    """A condition did not hold within its (generous) bound."""


class ProcessExited(LocalFleetError):
    """A process the fleet waited on exited; the message quotes its log."""


class IgnoredSigterm(LocalFleetError):
    """A process did not exit within its grace period after SIGTERM (it was killed)."""


class LocalFleet:
    """A coordinator and the processes that join it, all on this machine.

    ``root`` holds what the fleet writes unless told otherwise: the DuckDB
    file (``fleet.duckdb``), the logs (``logs/``) and the workers' work
    directories (``work/``). ``port`` defaults to a free one, kept across
    coordinator restarts (workers reconnect to the same address). ``env``
    is added to this process's environment for every process the fleet
    starts; ``cwd`` is where they start (this process's by default).

    ``tls``: run the fleet over TLS with worker certificates. The fleet makes
    its own CA in ``root/pki`` (kept if already there), a server certificate
    for 127.0.0.1 and localhost, and one certificate per worker id on first
    start; the coordinator serves HTTPS/WSS with ``--client-ca`` and each
    worker presents its certificate. ``url`` is then ``https://``, the fleet's
    processes get ``$TESTFLEET_CA`` and :attr:`client` verifies with it.

    Before the coordinator first starts, the fleet writes an admin token
    straight into its database file (the root of trust, as ``testfleet tokens
    create --db`` does) and keeps the secret in ``<root>/admin.token`` (mode
    0600): :attr:`client` sends it, :meth:`env` hands it on as
    ``$TESTFLEET_TOKEN`` to the CLI processes a test starts. The coordinator
    and the workers are started without it: a task must not find an admin
    token in its environment. Without ``tls``, each worker gets a worker token
    of its own instead of a certificate, in ``<root>/worker-tokens``
    (:mod:`~testfleet.local_worker_tokens`), passed as ``--token-file``.
    """

    def __init__(
        self,
        root: Path,
        *,
        db: Path | None = None,
        log_dir: Path | None = None,
        work_dir: Path | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        client_timeout: float = 30.0,
        tls: bool = False,
        db_key_file: Path | None = None,
        grpc: bool = False,
    ) -> None:
        self.root = root.absolute()
        self.db = (db or self.root / "fleet.duckdb").absolute()
        self.log_dir = (log_dir or self.root / "logs").absolute()
        self.work_dir = (work_dir or self.root / "work").absolute()
        self.port = port or free_port(LOOPBACK)
        self.url = f"{'https' if tls else 'http'}://{LOOPBACK}:{self.port}"
        #: ``grpc``: the coordinator also serves workers over gRPC here (``--grpc-port``).
        self.grpc_port = free_port(LOOPBACK) if grpc else None
        self.grpc_url = f"{'grpcs' if tls else 'grpc'}://{LOOPBACK}:{self.grpc_port}"
        #: The fleet's CA folder when it runs over TLS (see the class docstring).
        self.pki: Path | None = fleet_pki(self.root) if tls else None
        self.cwd = cwd
        self._env = dict(env or {})
        self._client_timeout = client_timeout
        self._client: FleetClient | None = None
        self._probe_client: FleetClient | None = None
        #: Every process started, by name (a restart replaces the entry).
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.log_paths: dict[str, Path] = {}
        #: Which process name runs which worker id (they differ in the demo).
        self._worker_names: dict[str, str] = {}
        #: Pids already sent SIGTERM (see _terminate).
        self._terminated: set[int] = set()
        self._starts = 0
        self._token: str | None = None
        self.token_file = self.root / "admin.token"
        #: The database is encrypted with the key in this file (``--db-key-file``):
        #: the coordinator is started with it and the admin token written with it.
        self.db_key_file = db_key_file
        #: Each worker's token, when the fleet runs without TLS (see the class docstring).
        self.worker_tokens = WorkerTokenFiles(self.root / "worker-tokens", self._admin_client)

    # ------------------------------------------------------------- starting

    def env(self) -> dict[str, str]:
        """The environment every fleet process gets: this one's, the fleet's
        additions, the coordinator's address, and unbuffered output (a log's
        tail must show what happened up to a failure)."""
        env = {
            **os.environ,
            **self._env,
            COORDINATOR_ENV: self.url,
            **({CA_ENV: str(ca_files(self.pki).cert)} if self.pki is not None else {}),
            "PYTHONUNBUFFERED": "1",
        }
        if self._token is not None:
            env[TOKEN_ENV] = self._token
        return env

    @property
    def token(self) -> str:
        """The fleet's admin token (made on first use, before the coordinator starts)."""
        if self._token is None:
            from testfleet.security.bootstrap import create_token_in_file

            self.root.mkdir(parents=True, exist_ok=True)
            self.db.parent.mkdir(parents=True, exist_ok=True)
            from testfleet.store.encryption import read_key_file

            key = read_key_file(self.db_key_file) if self.db_key_file is not None else None
            issued = create_token_in_file(
                self.db, "local-fleet-admin", Role.ADMIN, encryption_key=key
            )
            write_token_file(self.token_file, issued.secret)
            self._token = issued.secret
        return self._token

    def _without_credentials(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` for the coordinator and the workers: no API token reaches them
        (nor, through them, a task)."""
        extra = {**env}
        for name in (TOKEN_ENV, TOKEN_FILE_ENV):
            extra.pop(name, None)
        return extra

    def _tls_args(self, worker_id: str | None = None) -> list[str]:
        """The TLS flags of the coordinator (``worker_id`` None) or of a worker
        (``local_fleet_pki.py``); none without ``tls``."""
        if self.pki is None:
            return []
        if worker_id is None:
            return coordinator_tls_args(self.pki)
        return worker_tls_args(self.pki, worker_id)

    def _admin_client(self) -> FleetClient:
        """The client that makes workers' tokens, once the coordinator answers."""
        self.wait_healthy()
        return self.client

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        with_credentials: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as the fleet's process ``name``, logging to ``<log_dir>/<name>.log``.

        It gets ``$TESTFLEET_TOKEN`` unless ``with_credentials`` is false (the
        coordinator and the workers: see the class docstring).

        Refuses a name whose process still runs: stop it before starting another.
        """
        old = self.processes.get(name)
        if old is not None and old.poll() is None:
            raise LocalFleetError(f"{name} is still running; stop it before starting another")
        self._starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        full_env = {**self.env(), **(env or {})}
        if not with_credentials:
            full_env = self._without_credentials(full_env)
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as handle:
            handle.write(f"=== start #{self._starts}: {' '.join(argv)}\n".encode())
            handle.flush()
            process = subprocess.Popen(
                list(argv),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self._terminated.discard(process.pid)  # a reused pid is a new process
        self.processes[name] = process
        self.log_paths[name] = log
        return process

    def coordinator_argv(self, options: CoordinatorOptions) -> list[str]:
        """The coordinator's command line for ``options`` (the one place that knows it)."""
        args = ["coordinator", "--db", str(self.db), "--port", str(self.port)]
        if self.grpc_port is not None:
            args += ["--grpc-port", str(self.grpc_port)]
        if options.heartbeat_interval is not None:
            args += ["--heartbeat-interval", str(options.heartbeat_interval)]
        if options.heartbeat_timeout is not None:
            args += ["--heartbeat-timeout", str(options.heartbeat_timeout)]
        if options.log_level is not None:
            args += ["--log-level", options.log_level]
        args += self._tls_args()
        if self.db_key_file is not None:
            args += ["--db-key-file", str(self.db_key_file)]
        return [*options.prefix, sys.executable, "-m", "testfleet", *args, *options.extra_args]

    def worker_argv(self, worker_id: str, options: WorkerOptions) -> list[str]:
        """A worker's command line for ``options`` (the one place that knows it)."""
        work_dir = options.work_dir or self.work_dir / worker_id
        grpc = options.transport is Transport.GRPC
        if grpc and self.grpc_port is None:
            raise ValueError("a gRPC worker needs a fleet made with grpc=True")
        address = self.grpc_url if grpc else self.url
        args = ["worker", "--coordinator", address, "--slots", str(options.slots)]
        args += ["--worker-id", worker_id, "--work-dir", str(work_dir)]
        if not options.probe_torch:
            args.append("--no-probe-torch")
        if not options.probe_backends:
            args.append("--no-probe-backends")
        if options.codec is not None:
            args += ["--codec", options.codec.value]
        if options.log_level is not None:
            args += ["--log-level", options.log_level]
        for key, value in options.tags.items():
            args += ["--tag", f"{key}={value}"]
        if self.pki is None:
            args += ["--token-file", str(self.worker_tokens.for_worker(worker_id))]
        args += self._tls_args(worker_id)
        return [*options.prefix, sys.executable, "-m", "testfleet", *args, *options.extra_args]

    def start_coordinator(
        self,
        options: CoordinatorOptions | None = None,
        *,
        wait: bool = True,
        timeout: float = START_TIMEOUT_SECONDS,
    ) -> subprocess.Popen[bytes]:
        """Start the coordinator (again, after a stop: same file, same port) and,
        with ``wait``, return once it answers ``/health``."""
        options = options or CoordinatorOptions()
        _ = self.token  # the root of trust, written before the coordinator holds the file
        process = self.start(
            COORDINATOR, self.coordinator_argv(options), options.env, with_credentials=False
        )
        if wait:
            self.wait_healthy(timeout)
        return process

    def start_worker(
        self,
        worker_id: str,
        options: WorkerOptions | None = None,
        *,
        name: str | None = None,
        wait: bool = True,
        timeout: float = START_TIMEOUT_SECONDS,
    ) -> subprocess.Popen[bytes]:
        """Start worker ``worker_id`` (process and log ``name``, by default the id)
        and, with ``wait``, return once the coordinator lists it as connected.

        To start several, pass ``wait=False`` and then :meth:`wait_for_workers`:
        they come up side by side.
        """
        options = options or WorkerOptions()
        name = name or worker_id
        process = self.start(
            name, self.worker_argv(worker_id, options), options.env, with_credentials=False
        )
        self._worker_names[worker_id] = name
        if wait:
            self.wait_for_workers([worker_id], timeout=timeout)
        return process

    # -------------------------------------------------------------- waiting

    def wait_until(
        self,
        predicate: Callable[[], T | None],
        timeout: float = START_TIMEOUT_SECONDS,
        what: str = "a condition",
        poll: float = 0.1,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that.

        A :class:`FleetError` from it counts as "not yet" (a coordinator that
        is restarting); after ``timeout`` seconds, :class:`WaitTimeout` names
        ``what`` and the last such error.
        """
        deadline = time.monotonic() + timeout
        last_error: FleetError | None = None
        while True:
            value: T | None
            try:
                value = predicate()
            except FleetError as exc:
                value, last_error = None, exc
            if value:
                return value
            if time.monotonic() > deadline:
                note = f" (last error: {last_error})" if last_error else ""
                raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}{note}")
            time.sleep(poll)

    def wait_healthy(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Return once the coordinator answers ``/health``; :class:`ProcessExited` if it died."""

        def healthy() -> bool:
            self.check_running([COORDINATOR])
            return bool(self._probe.health()["status"] == "ok")

        self.wait_until(healthy, timeout, "the coordinator to answer /health")

    def wait_for_workers(
        self,
        worker_ids: Sequence[str] | None = None,
        *,
        count: int | None = None,
        timeout: float = START_TIMEOUT_SECONDS,
    ) -> None:
        """Return once the coordinator lists ``worker_ids`` (or at least ``count``
        workers, e.g. agents hosted in one process) as connected.

        Fails early with the log's tail if the coordinator or one of the awaited
        processes (with ``count``: any of the fleet's) has exited.
        """
        wanted = set(worker_ids or ())
        if worker_ids is not None:
            watched = [self._worker_names.get(w, w) for w in wanted]
            what = f"workers {sorted(wanted)} to connect"
        else:
            watched = list(self.processes)
            what = f"{count} workers to connect"

        def connected() -> bool:
            self.check_running([COORDINATOR, *watched])
            seen = {w["worker_id"] for w in self._probe.workers() if w["connected"]}
            return wanted <= seen and len(seen) >= (count or 0)

        self.wait_until(connected, timeout, what)

    def check_running(self, names: Sequence[str]) -> None:
        """:class:`ProcessExited`, quoting its log, for the first of ``names`` that has exited."""
        for name in names:
            process = self.processes.get(name)
            if process is not None and process.poll() is not None:
                raise ProcessExited(
                    f"{name} exited with {process.returncode}; the end of its log "
                    f"{self.log_paths[name]}:\n{self.tail(name)}"
                )

    # ------------------------------------------------------------- stopping

    def _process(self, target: str | subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        return self.processes[target] if isinstance(target, str) else target

    def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM ``process`` once: a second one could land after its handler
        is gone (a worker's asyncio loop has closed) and kill it mid-exit."""
        if process.poll() is None and process.pid not in self._terminated:
            self._terminated.add(process.pid)
            process.send_signal(signal.SIGTERM)

    def _name_of(self, process: subprocess.Popen[bytes]) -> str:
        return next((n for n, p in self.processes.items() if p is process), "a process")

    def send_signal(self, target: str | subprocess.Popen[bytes], sig: int) -> None:
        """Send ``sig`` to the process alone (not its group: a SIGKILLed worker's
        task processes live on, as they would on a real machine); for SIGKILL,
        wait until it has gone."""
        process = self._process(target)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
        if sig == signal.SIGKILL:
            process.wait(30)

    def stop(
        self,
        target: str | subprocess.Popen[bytes],
        *,
        grace: float = STOP_GRACE_SECONDS,
        strict: bool = False,
    ) -> int:
        """SIGTERM the process and wait up to ``grace`` seconds for a clean exit;
        after that, SIGKILL its group. Returns its exit status.

        With ``strict``, a process that had to be killed is an error
        (:class:`IgnoredSigterm`): tests of clean shutdown want to know.
        """
        process = self._process(target)
        if process is self.processes.get(COORDINATOR):
            # Over TLS its shutdown waits (5 s) for idle clients' close_notify: close ours first.
            self.close_client()
        if process.poll() is None:
            self._terminate(process)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                process.wait(30)
                if strict:
                    raise IgnoredSigterm(
                        f"{self._name_of(process)} (pid {process.pid}) ignored SIGTERM "
                        f"for {grace:g} s and was killed"
                    ) from None
        return process.returncode

    def stop_all(self, *, grace: float = STOP_GRACE_SECONDS, strict: bool = False) -> None:
        """Stop everything cleanly: every other process first, side by side, then the
        coordinator (workers report to it on their way out; after it, its file is free)."""
        others = [p for name, p in self.processes.items() if name != COORDINATOR]
        for process in others:
            self._terminate(process)
        for process in others:
            self.stop(process, grace=grace, strict=strict)
        coordinator = self.processes.get(COORDINATOR)
        if coordinator is not None:
            self.stop(coordinator, grace=grace, strict=strict)
        self.close_client()

    def close(self) -> None:
        """Kill every process group the fleet started and reap them (idempotent).

        Called whatever happened, after :meth:`stop_all` or instead of it: a
        group outlives its leader, so a worker's children go too.
        """
        self.close_client()
        for process in self.processes.values():
            _kill_group(process)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.stop_all()
        finally:
            self.close()

    # ------------------------------------------------------------- reading

    @property
    def client(self) -> FleetClient:
        """A REST client for the coordinator, made on first use."""
        if self._client is None:
            self._client = FleetClient(
                self.url, timeout=self._client_timeout, ca=self._ca, token=self.token
            )
        return self._client

    @property
    def _ca(self) -> Path | None:
        return ca_files(self.pki).cert if self.pki is not None else None

    @property
    def _probe(self) -> FleetClient:
        """The client that waiting polls with (short timeouts)."""
        if self._probe_client is None:
            self._probe_client = FleetClient(
                self.url, timeout=PROBE_TIMEOUT_SECONDS, ca=self._ca, token=self.token
            )
        return self._probe_client

    def close_client(self) -> None:
        """Close the REST clients (made again on next use)."""
        for client in (self._client, self._probe_client):
            if client is not None:
                client.close()
        self._client = self._probe_client = None

    def tail(self, name: str, limit: int = TAIL_BYTES) -> str:
        """The last ``limit`` bytes of process ``name``'s log, as text."""
        path = self.log_paths.get(name, self.log_dir / f"{name}.log")
        return tail(path, limit)

    def log_report(self) -> str:
        """Every process's exit status and the tail of its log (for a failure report)."""
        return "\n".join(
            f"----- {name} (exit {process.poll()}) {self.log_paths[name]}\n{self.tail(name)}"
            for name, process in self.processes.items()
        )


def tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of the file at ``path``, as text (or why it cannot be read)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return data[-limit:].decode("utf-8", errors="replace")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group ``process`` leads (it was started in a session of its own).

    Sent even when the leader has exited: its children may still be in the group.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
