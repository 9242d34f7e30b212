"""A fleet of several coordinators on one PostgreSQL database, for the failover tests.

Callers: ``test_it_failover.py`` and ``benchmarks/failover.py``. Every process
is ``python -m testfleet ...`` on loopback with its output in a file under
``root``: coordinators with ``--store DSN`` (each on its own port), workers
given every coordinator's address (``--coordinator URL1,URL2,...``), so that
they follow the leader as a real fleet's workers do.

Plain HTTP on loopback, with tokens: the admin token is written into the
database directly (as ``tokens create`` does with direct access), the
workers' tokens are made through the leader's API. Nothing here measures
speed except :meth:`HaFleet.wait_leader`, which returns how long it waited
(the benchmark's figure); waits poll with a generous upper bound.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from testfleet.coordinator.startup import free_port
from testfleet.domain.enums import TaskStatus
from testfleet.security.credentials import write_token_file
from testfleet.security.tokens import Role, issue_token
from testfleet.store.postgres import PostgresStore

T = TypeVar("T")

#: Upper bound on any wait (never an expectation of speed).
WAIT_SECONDS = 120.0
TERMINAL = frozenset(status.value for status in TaskStatus if status.is_terminal)


class HaFleet:
    """Coordinators and workers under ``root`` sharing the database at ``dsn``."""

    def __init__(self, root: Path, dsn: str, *, lease_seconds: float = 10.0) -> None:
        self.root = root
        self.dsn = dsn
        self.lease_seconds = lease_seconds
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.coordinators: list[str] = []
        self.token = self._admin_token()

    # ------------------------------------------------------------- processes

    def _admin_token(self) -> str:
        issued = issue_token("ha-admin", Role.ADMIN, time.time())
        with PostgresStore(self.dsn) as store:
            store.add_token(issued.record, [])
        return issued.secret

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESTFLEET_")}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(
        self, name: str, args: Sequence[str], prefix: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """``python -m testfleet ARGS`` (``prefix``: words before it, e.g. to run it
        in a network namespace), its output in ``<root>/<name>.log``."""
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "testfleet", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.root,
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        return process

    def coordinator_args(self, name: str, *extra: str) -> list[str]:
        port = self.ports.setdefault(name, free_port())
        if name not in self.coordinators:
            self.coordinators.append(name)
        return [
            "coordinator",
            "--store",
            self.dsn,
            "--port",
            str(port),
            "--lease-seconds",
            str(self.lease_seconds),
            "--heartbeat-interval",
            "0.5",
            "--heartbeat-timeout",
            "10",
            "--rate-limit",
            "0",
            "--log-level",
            "info",
            *extra,
        ]

    def start_coordinator(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        return self._spawn(name, self.coordinator_args(name, *extra))

    def start_process(
        self, name: str, argv: Sequence[str], prefix: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """Any other process the fleet needs (a forwarder), killed with the rest."""
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [*prefix, *argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.processes[name] = process
        return process

    def start_worker(
        self, name: str, slots: int = 8, prefix: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        leader = self.wait_leader()[0]
        with self.http(leader) as http:
            made = http.post("/api/v1/tokens", json={"name": name, "role": "worker"})
            made.raise_for_status()
        token_file = self.root / f"{name}.token"
        write_token_file(token_file, made.json()["secret"])
        return self._spawn(
            name,
            [
                "worker",
                "--coordinator",
                self.urls,
                "--token-file",
                str(token_file),
                "--slots",
                str(slots),
                "--worker-id",
                name,
                "--log-level",
                "info",
            ],
            prefix,
        )

    def signal(self, name: str, sig: int) -> None:
        os.kill(self.processes[name].pid, sig)

    def kill(self, name: str) -> None:
        """kill -9, and reap it."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def close(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)}" for name in self.processes)

    # ------------------------------------------------------------- the API

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def urls(self) -> str:
        return ",".join(self.url(name) for name in self.coordinators)

    def http(self, name: str, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url(name),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=timeout,
        )

    def health(self, name: str) -> tuple[int, dict[str, Any]] | None:
        """``(status, body)`` of the coordinator's /api/v1/health, None if it does not answer."""
        try:
            response = httpx.get(f"{self.url(name)}/api/v1/health", timeout=1.0)
        except httpx.HTTPError:
            return None
        return response.status_code, response.json()

    def leaders(self, among: Iterable[str] | None = None) -> list[str]:
        names = self.coordinators if among is None else list(among)
        return [name for name in names if (self.health(name) or (0, {}))[0] == 200]

    def wait_leader(
        self, among: Iterable[str] | None = None, timeout: float = WAIT_SECONDS
    ) -> tuple[str, float]:
        """The coordinator that answers health 200, and the seconds waited for it."""
        names = list(self.coordinators if among is None else among)
        started = time.monotonic()

        def found() -> str | None:
            leading = self.leaders(names)
            return leading[0] if leading else None

        name = self.wait_until(found, timeout, f"a leader among {names}", poll=0.05)
        return name, time.monotonic() - started

    def wait_until(
        self, condition: Callable[[], T | None], timeout: float, what: str, poll: float = 0.2
    ) -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value is not None and value is not False:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}\n{self.logs()}"
                )
            time.sleep(poll)

    def submit(self, documents: list[dict[str, Any]]) -> list[str]:
        """Submit to whichever coordinator leads, retrying until one accepts."""

        def accepted() -> list[str] | None:
            for name in self.leaders():
                with contextlib.suppress(httpx.HTTPError), self.http(name, 60) as http:
                    response = http.post("/api/v1/tasks", json=documents)
                    if response.status_code == 201:
                        return list(response.json()["task_ids"])
            return None

        return self.wait_until(accepted, WAIT_SECONDS, "a submission to be accepted")

    # ------------------------------------------------------------- the database

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            return list(connection.execute(query, params).fetchall())

    def statuses(self, task_ids: Sequence[str]) -> dict[str, str]:
        rows = self.sql(
            "SELECT task_id, status FROM distributed_tasks WHERE task_id = ANY(%s)", list(task_ids)
        )
        return {task_id: status for task_id, status in rows}

    def wait_terminal(self, task_ids: Sequence[str], timeout: float = WAIT_SECONDS) -> None:
        def done() -> bool:
            statuses = self.statuses(task_ids)
            return len(statuses) == len(task_ids) and all(s in TERMINAL for s in statuses.values())

        self.wait_until(done, timeout, f"{len(task_ids)} tasks to end", poll=0.5)

    def counted_outcomes(self, task_ids: Sequence[str]) -> dict[str, int]:
        """Counted results per task (exactly one each when nothing is lost or doubled)."""
        rows = self.sql(
            "SELECT task_id, count(*) FROM task_results WHERE counted AND task_id = ANY(%s)"
            " GROUP BY task_id",
            list(task_ids),
        )
        counts = {task_id: 0 for task_id in task_ids}
        counts.update({task_id: int(count) for task_id, count in rows})
        return counts

    def rows_by_epoch(self) -> dict[int, int]:
        """Rows of the loop's three tables per ``written_epoch``."""
        counts: dict[int, int] = {}
        for table in ("distributed_tasks", "task_execution_history", "task_results"):
            for epoch, count in self.sql(
                f"SELECT written_epoch, count(*) FROM {table} GROUP BY written_epoch"
            ):
                counts[int(epoch)] = counts.get(int(epoch), 0) + int(count)
        return counts

    def epoch(self) -> int:
        return int(self.sql("SELECT epoch FROM coordinator_lease WHERE id = 1")[0][0])


def simulated(count: int, seconds: float = 0.05) -> list[dict[str, Any]]:
    return [{"type": "simulated", "config": {"duration_seconds": seconds}} for _ in range(count)]
