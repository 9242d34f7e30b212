"""Cleaning up the memory cgroups a worker killed outright (``kill -9``) left behind.

Callers: :func:`~testfleet.worker.executors.resource_limits.find_cgroup_root`,
once at worker start, on the directory its own group is made in, before it
makes its own.

A worker's groups are named ``testfleet-<worker pid>``, with one
``attempt-<id>`` child per running attempt (and a short-lived ``probe``).
A group whose worker pid no longer runs is stale: its worker died without
removing it. Its attempts may still have processes in it (the dead worker's
task, or what that task started, ``setsid``/double fork and cleared
environment included: cgroup membership does not depend on either), so each
child group is emptied first: ``cgroup.kill`` where the kernel has it (v2,
5.14+), else SIGKILL to every pid ``cgroup.procs`` lists, repeated until
the group is empty (a process forking meanwhile lands in the same group) or
``wait_seconds`` pass; then the empty groups are removed. Only groups of
this naming are touched, and only those whose worker pid is gone, so the
live workers of other processes on the machine keep theirs. (A dead
worker's pid reused by an unrelated process keeps its group until that
process ends: it is not removed on a guess.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

GROUP_PREFIX = "testfleet-"
DEFAULT_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.02


def remove_stale_groups(parent: Path, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> list[Path]:
    """End the processes left in dead workers' groups under ``parent`` and remove
    the groups; the groups removed. Never raises (a group that cannot be
    emptied or removed is logged and left)."""
    removed: list[Path] = []
    with contextlib.suppress(OSError):
        for group in sorted(parent.glob(f"{GROUP_PREFIX}*")):
            pid = group.name.removeprefix(GROUP_PREFIX)
            if not pid.isdigit() or psutil.pid_exists(int(pid)):
                continue
            ended = 0
            with contextlib.suppress(OSError):
                for child in sorted(p for p in group.iterdir() if p.is_dir()):
                    ended += end_members(child, wait_seconds)
                    child.rmdir()
                group.rmdir()
                removed.append(group)
            if ended or group not in removed:
                log.warning(
                    "stale cgroup %s of a dead worker: ended %d process(es) left in it; %s",
                    group,
                    ended,
                    "removed" if group in removed else "could not remove it",
                )
    return removed


def members(group: Path) -> list[int]:
    """The live pids in ``group`` (none when it cannot be read). Zombies are left
    out: they are dead already, and their parent reaps them."""
    try:
        text = (group / "cgroup.procs").read_text()
    except OSError:
        return []
    pids = [int(line) for line in text.split() if line.isdigit() and int(line) > 0]
    return [pid for pid in pids if not _zombie(pid)]


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # gone
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def end_members(group: Path, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> int:
    """SIGKILL every process in ``group`` until it is empty or ``wait_seconds``
    pass; how many distinct processes were signalled."""
    signalled: set[int] = set()
    deadline = time.monotonic() + wait_seconds
    kill_file = group / "cgroup.kill"
    while pids := members(group):
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        for pid in pids:
            if pid == os.getpid():
                continue  # never this worker (it cannot be in a dead worker's group)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            signalled.add(pid)
        if time.monotonic() >= deadline:
            break
        time.sleep(_POLL_SECONDS)
    return len(signalled)
