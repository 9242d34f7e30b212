"""What a coordinator checks before it announces its address: the port and the file.

Callers: :func:`testfleet.coordinator.app.run_coordinator`. A coordinator
used to print "testfleet coordinator on http://…" and then die on a raw
uvicorn error when the port was taken, or on DuckDB's lock error when another
process had the database open. Now it binds the listening sockets itself
(and hands them to uvicorn, so nothing can take the port between the check
and the serving) and opens the database before saying anything; when either
fails, :class:`StartupError` carries one line naming the process in the way
(through psutil) and what to do instead.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import resource
import socket
from collections.abc import Callable
from pathlib import Path

import psutil

from testfleet.store import StoreError

#: Listen backlog for the sockets handed to uvicorn (uvicorn's own default).
BACKLOG = 2048
#: How many ports after a taken one are tried for a free one to suggest.
SUGGESTION_RANGE = 20


log = logging.getLogger(__name__)

#: File descriptors the coordinator keeps beyond its sockets: the database
#: file and its WAL, logs, the event loop's own, a few threads' pipes.
FD_HEADROOM = 256


class StartupError(Exception):
    """The coordinator cannot start; the message is one line for a person."""


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets for ``host``:``port`` (one per address ``host`` resolves to,
    as asyncio would bind them), or :class:`StartupError` saying why not."""
    try:
        addresses = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(
            f"--host {host!r}: cannot resolve it ({exc.strerror}); give an address of this "
            "machine, e.g. 127.0.0.1 or 0.0.0.0 (every interface)"
        ) from None
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # As asyncio does: "localhost" binds ::1 and 127.0.0.1 separately.
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if listeners[0] is not listener and port == 0:
                address = (address[0], listeners[0].getsockname()[1], *address[2:])
            listener.bind(address)
            # Listening at once: on Linux another SO_REUSEADDR socket may bind a
            # port that is bound but not yet listening.
            listener.listen(BACKLOG)
    except OSError as exc:
        for listener in listeners:
            listener.close()
        raise StartupError(_bind_failure(host, port, exc)) from None
    return listeners


def _bind_failure(host: str, port: int, exc: OSError) -> str:
    where = f"cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        holder = port_holder(port) or (
            "another process (one this user cannot see; `ss -ltnp` as root names it)"
        )
        free = free_port_near(host, port)
        pick = f"pick another with --port (--port {free} is free)" if free else "pick another"
        return f"{where}: the port is taken by {holder}. Stop that, or {pick}."
    if exc.errno == errno.EACCES:
        return (
            f"{where}: permission denied (ports below 1024 need privileges); "
            "pick another with --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{where}: {host} is not an address of this machine; use --host 0.0.0.0 "
            "(every interface) or one of its addresses"
        )
    return f"{where}: {exc.strerror or exc}"


def port_holder(port: int) -> str | None:
    """The process listening on TCP ``port``, described, or ``None`` if none is visible."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for connection in connections:
        if (
            connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == port
            and connection.pid
        ):
            return describe_process(connection.pid)
    return None


def free_port_near(host: str, port: int) -> int | None:
    """The first port after ``port`` that ``host`` can listen on now (a suggestion only)."""
    for candidate in range(port + 1, min(port + 1 + SUGGESTION_RANGE, 65536)):
        if _bindable(host, candidate) is not None:
            return candidate
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port ``host`` can listen on now, picked by the operating system.

    Callers: :class:`testfleet.local_fleet.LocalFleet`, which hands it to the
    coordinator it starts, and tests that need a port nobody listens on.
    Nothing reserves it: should another process take it before the coordinator
    binds it, the coordinator's start-up error names that process.
    """
    port = _bindable(host, 0)
    if port is None:
        raise OSError(f"no free port on {host}")
    return port


def _bindable(host: str, port: int) -> int | None:
    """The port a probe socket could bind on ``host`` (``port``, or the OS's
    pick for 0), or ``None``; the probe is closed again at once."""
    with contextlib.suppress(OSError), socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host if ":" not in host else "127.0.0.1", port))
        bound: int = probe.getsockname()[1]
        return bound
    return None


def describe_process(pid: int) -> str:
    """``process 1234 (python -m testfleet coordinator --db fleet.duckdb)``."""
    try:
        process = psutil.Process(pid)
        # Whitespace folded: a ``python -c`` script must not break the one-line error.
        command = " ".join(" ".join(process.cmdline()).split()) or process.name()
    except psutil.Error:
        return f"process {pid}"
    if len(command) > 160:
        command = command[:157] + "..."
    return f"process {pid} ({command})"


def database_failure(db_path: str | Path, error: StoreError) -> str:
    """One line for a database the coordinator could not open.

    DuckDB's lock error names the holder's PID ("Conflicting lock is held in
    /usr/bin/python3 (PID 8058)"); psutil turns that into its command line,
    which for a testfleet coordinator says which one.
    """
    detail = str(error.__cause__ or error)
    found = re.search(r"\(PID (\d+)\)", detail)
    if "lock" not in detail.lower():
        return str(error)
    holder = describe_process(int(found.group(1))) if found else "another process"
    return (
        f"cannot open the database {str(db_path)!r}: {holder} holds it, and only one "
        "coordinator may own a database file. Stop that process, or give this "
        "coordinator another --db."
    )


def raise_file_limit(
    wanted: int,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> tuple[int, int]:
    """Raise the soft limit on open files towards ``wanted``, as far as the hard
    limit allows; returns (soft before, soft after).

    Called by :func:`~testfleet.coordinator.app.run_coordinator` with what its
    limits allow open at once (workers, REST connections, headroom). Each
    worker holds a socket for as long as it is connected, and many systems
    start a process with a soft limit of 1,024: a 1,000-worker fleet then met
    ``OSError: [Errno 24] Too many open files`` in accept (issue 14). The soft
    limit is the process's own to raise up to the hard one; beyond that it
    is the operator's (``ulimit -Hn``, systemd's ``LimitNOFILE``), so a limit
    still below ``wanted`` is logged, not refused: a smaller fleet still runs.
    ``getrlimit``/``setrlimit`` are the ``resource`` module's; tests pass fakes.
    """
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft, soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
            target = soft
    if target < wanted:
        log.warning(
            "open-file limit is %d (hard limit %s), below the %d the configured limits may "
            "need (--max-workers, --max-connections): raise it (ulimit -Hn, LimitNOFILE) or "
            "expect workers to be refused",
            target,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
            wanted,
        )
    return soft, target
