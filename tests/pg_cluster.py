"""A private PostgreSQL cluster for tests: made, started and removed by the suite.

Callers: the session fixture ``pg_cluster`` (tests/conftest.py) makes one per
test process (an xdist worker each has its own), the ``pg_dsn`` fixture gives a
test a fresh database of it, and the leadership tests restart it with
:meth:`PgCluster.restart_immediate` (a crash, as a failover sees one).

Why a cluster of our own rather than a shared server: tests then never depend
on a machine's configuration, each process owns its port, and a database per
test keeps tests independent (``CREATE DATABASE ... TEMPLATE`` of a database
that already holds the schema costs a few milliseconds).

As root (CI containers) the server runs as the Debian ``postgres`` user, since
``initdb`` refuses root; as anyone else it runs as that user. The binaries are
found with ``pg_config --bindir`` or under ``/usr/lib/postgresql/*/bin``
(``make test`` installs Debian's ``postgresql`` package): the tests never skip
for want of them, they fail saying what to install.

Authentication: trust for every role over loopback, except ``pw_user``
(password :data:`PW_PASSWORD`, scram) for the wrong-credentials tests.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

#: The superuser the tests connect as (trusted over loopback).
SUPERUSER = "testfleet"
#: A role that must give its password (the wrong-credentials tests).
PW_USER = "pw_user"
PW_PASSWORD = "right-password"


def find_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are; a clear error naming the package if nowhere."""
    pg_config = shutil.which("pg_config")
    candidates: list[str] = []
    if pg_config is not None:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if result.returncode == 0:
            candidates.append(result.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise RuntimeError(
        "PostgreSQL's server binaries (initdb, pg_ctl) are not installed; "
        "install Debian's postgresql package (make test does: apt-get install postgresql)"
    )


def free_port() -> int:
    """A loopback port free right now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgCluster:
    """One private PostgreSQL server on a loopback port (see the module docstring)."""

    def __init__(self, *, durable: bool = False) -> None:
        """``durable``: fsync and full-page writes on, as any real server runs.
        Off (the default) for the test suite only, where the operating system
        never crashes under the server (even ``pg_ctl -m immediate`` leaves the
        page cache intact) and each test pays no flush; benchmarks that set
        PostgreSQL beside DuckDB turn it on, or PostgreSQL's commits would skip
        the flush DuckDB's pay."""
        self.durable = durable
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="testfleet-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.sockets.mkdir()
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            # initdb refuses root: the server runs as postgres, owning the directory.
            owner = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._names = itertools.count(1)
        self._running = False
        self._template: str | None = None
        self._initdb()
        self.start()
        with self.connect() as connection:
            connection.execute(f"CREATE ROLE {PW_USER} LOGIN PASSWORD '{PW_PASSWORD}'")
        atexit.register(self.remove)

    # -- the server ------------------------------------------------------------

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}): {result.stderr}{result.stdout}"
                f"\n{log[-2000:]}"
            )

    def _initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            f"--username={SUPERUSER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        hba = (
            f"local all all trust\n"
            f"host all {PW_USER} 127.0.0.1/32 scram-sha-256\n"
            f"host all all 127.0.0.1/32 trust\n"
        )
        hba_file = self.data / "pg_hba.conf"
        hba_file.write_text(hba)
        if self._as_user:  # written as root: hand it back to the server's user
            owner = pwd.getpwnam("postgres")
            os.chown(hba_file, owner.pw_uid, owner.pw_gid)

    def start(self) -> None:
        """Start the server (after :meth:`stop` or :meth:`restart_immediate`)."""
        options = (
            f"-k {self.sockets} -p {self.port} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self._running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode`` is pg_ctl's (``immediate``: as if it crashed)."""
        if self._running:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
            self._running = False

    def restart_immediate(self) -> None:
        """Kill the server as a crash would (``pg_ctl -m immediate``), then start it
        again on the same port: every connection breaks, committed data stays."""
        self.stop("immediate")
        self.start()

    def remove(self) -> None:
        """Stop the server and delete its files (the session's end, or atexit)."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases --------------------------------------------------------------

    def dsn(self, database: str = "postgres", *, user: str = SUPERUSER, password: str = "") -> str:
        """A ``postgresql://`` DSN for ``database`` over loopback TCP."""
        secret = f":{password}" if password else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit superuser connection (``CREATE DATABASE`` needs autocommit)."""
        return psycopg.connect(self.dsn(database), autocommit=True)

    def set_template(self, name: str) -> None:
        """Make new databases copies of ``name`` (one that already holds the schema)."""
        self._template = name

    def new_database(self, *, empty: bool = False) -> str:
        """A new database's name: a copy of the template (with the schema), or an
        ``empty`` one (the migration tests)."""
        name = f"t{os.getpid()}_{next(self._names)}"
        template = "template0" if empty or self._template is None else self._template
        with self.connect() as connection:
            connection.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending any connection a test left open to it."""
        with self.connect() as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
