"""A task's processes wherever they went: found by a mark in their environment, ended.

Callers: :func:`~testfleet.worker.executors.base.attempt_environment` puts
:func:`attempt_mark` in every task child's environment; the command and
benchmark executors call :func:`end_marked` once an attempt's process group is
gone, to end what left the group; the orphan guard
(:mod:`testfleet.worker.orphan_guard`) calls :func:`kill_marked` with
:data:`WORKER_MARK` when its worker dies.

Why a mark in the environment: a task's process group is the cheap, exact
handle on its tree, but a child may leave it (``setsid``, a daemon's double
fork), and then neither its group nor its parent links lead back to the task
(an orphan is reparented to PID 1). Its environment does: a process inherits
it across fork, exec, ``setsid`` and double forks, and ``/proc/PID/environ``
shows what it was started with. So each attempt's children carry
``TESTFLEET_PROCESS_MARK=<worker mark>-<attempt id>``. The worker mark is
random per worker process, so two workers on one machine (or two
coordinators' attempt 5) never match each other's processes.

What is not covered, and the README says so: a process that leaves the
group *and* is started with a cleared or rewritten environment (``env -i``),
or that runs as another user (its environ is unreadable to us). cgroups
would catch those; this machine class (cgroup v1, not writable) offers none,
so the mark is the mechanism everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal

#: The environment variable that marks a task's processes.
MARK_VARIABLE = "TESTFLEET_PROCESS_MARK"
#: This worker process's mark; every attempt's mark starts with it.
WORKER_MARK = secrets.token_hex(8)
#: How often :func:`end_marked` looks whether the marked processes are gone.
POLL_SECONDS = 0.05
#: A process that forks while being killed can add members: kill_marked looks again
#: up to this many times (each round stops the ones it finds first, so they cannot fork).
KILL_ROUNDS = 20


def attempt_mark(attempt_id: int, worker_mark: str = WORKER_MARK) -> str:
    """The value of :data:`MARK_VARIABLE` for one attempt's processes."""
    return f"{worker_mark}-{attempt_id}"


def _entry(mark: str) -> bytes:
    return f"{MARK_VARIABLE}={mark}".encode()


def find_marked(mark: str, *, prefix: bool = False) -> list[int]:
    """Pids of live processes whose environment carries ``mark`` (exactly, or
    as the start of the value when ``prefix``). Zombies have no readable
    environment, so they never count; nor does this process."""
    wanted = _entry(mark)
    me = os.getpid()
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found  # no /proc (macOS): only the process group is tracked
    for name in entries:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue  # gone meanwhile, or another user's
        for variable in environ.split(b"\0"):
            if variable == wanted or (prefix and variable.startswith(wanted)):
                found.append(int(name))
                break
    return found


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_marked(mark: str, *, prefix: bool = False) -> list[int]:
    """SIGKILL every process marked ``mark``; returns the pids it signalled.

    Each round first stops what it finds (SIGSTOP), then looks again, so a
    process forking as fast as it can cannot outrun the search; then kills the
    lot. Blocking (reads /proc): call from a thread or a short-lived process.
    """
    stopped: set[int] = set()
    for _ in range(KILL_ROUNDS):
        fresh = [pid for pid in find_marked(mark, prefix=prefix) if pid not in stopped]
        if not fresh:
            break
        _signal_all(fresh, signal.SIGSTOP)
        stopped.update(fresh)
    _signal_all(sorted(stopped), signal.SIGKILL)
    return sorted(stopped)


async def end_marked(mark: str, grace_seconds: float) -> list[int]:
    """SIGTERM the processes marked ``mark``, give them ``grace_seconds``, then
    SIGKILL what is left (as :func:`~.process_group.end_group` does for a group).

    Returns the pids found (usually none: most tasks leave nothing behind). The
    /proc scans run in a thread, so the worker's event loop never waits on them.
    """
    found = await asyncio.to_thread(find_marked, mark)
    if not found:
        return found
    _signal_all(found, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_seconds
    while loop.time() < deadline:
        await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - loop.time())))
        if not await asyncio.to_thread(find_marked, mark):
            return found
    await asyncio.to_thread(kill_marked, mark)
    return found
