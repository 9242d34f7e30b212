"""A worker killed with -9 leaves its memory cgroups, and maybe processes in them;
the next worker on the machine ends those processes and removes the groups
(``worker/executors/stale_cgroups.py``).

Run on the machine's real memory cgroup where this process may make groups
(cgroup v1 under /sys/fs/cgroup/memory here; v2 with the memory controller
elsewhere), skipped where it may not: a fake directory cannot hold processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testfleet.worker.executors.resource_limits import find_cgroup_root
from testfleet.worker.executors.stale_cgroups import end_members, members, remove_stale_groups


def dead_pid() -> int:
    """A pid that ran and is gone (its group is then a dead worker's)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def cgroup_parent() -> Path:
    """The directory worker groups are made in, where this process may make them."""
    root = find_cgroup_root(name=f"testfleet-probe-{os.getpid()}")
    if root is None:
        pytest.skip("no writable memory cgroup on this machine")
    parent = root.path.parent
    root.path.rmdir()
    return parent


def start_in(group: Path, code: str, *fds: int) -> subprocess.Popen[bytes]:
    """A process that joins ``group`` before it runs ``code`` (as a task's would)."""
    procs = str(group / "cgroup.procs")

    def join() -> None:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return subprocess.Popen(
        [sys.executable, "-c", code], preexec_fn=join, start_new_session=True, pass_fds=fds
    )


def test_a_dead_workers_group_is_emptied_and_removed(cgroup_parent: Path) -> None:
    stale = cgroup_parent / f"testfleet-{dead_pid()}"
    attempt = stale / "attempt-12"
    attempt.mkdir(parents=True)
    # A task left behind, and one that escaped its session and cleared its
    # environment (a double fork): both are still members of the group.
    left = start_in(attempt, "import time; time.sleep(600)")
    ready_read, ready_write = os.pipe()
    escaped = start_in(
        attempt,
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    os.environ.clear()\n"
        "    if os.fork() == 0:\n"
        f"        os.write({ready_write}, b'x')\n"
        "        time.sleep(600)\n"
        "    os._exit(0)\n"
        "time.sleep(600)\n",
        ready_write,
    )
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"x"  # the escaped grandchild runs
        in_group = members(attempt)
        assert len(in_group) >= 3
        assert left.pid in in_group
        assert escaped.pid in in_group
        assert remove_stale_groups(cgroup_parent) == [stale]
        assert not stale.exists()
        assert left.wait(10) == -9
        assert escaped.wait(10) == -9
        for pid in in_group:  # the escaped grandchild too (reparented, so not ours to wait)
            assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)
    finally:
        os.close(ready_read)
        for process in (left, escaped):
            if process.poll() is None:
                process.kill()
                process.wait()
        for path in (attempt, stale):
            if path.exists():
                end_members(path, 1.0)
                path.rmdir()


def test_a_live_workers_group_is_left_alone(cgroup_parent: Path) -> None:
    live = cgroup_parent / f"testfleet-{os.getpid()}"
    created = not live.exists()
    (live / "attempt-1").mkdir(parents=True, exist_ok=True)
    try:
        assert live not in remove_stale_groups(cgroup_parent)
        assert (live / "attempt-1").exists()
    finally:
        (live / "attempt-1").rmdir()
        if created:
            live.rmdir()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
