"""Finding a task's processes by their mark, and the orphan guard that ends a dead worker's.

Real child processes (quick ones); waits end at the event itself (pidfds), never by sleeping.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from process_signals import all_exited

from testfleet.worker.executors.task_processes import (
    MARK_VARIABLE,
    attempt_mark,
    end_marked,
    find_marked,
    kill_marked,
)
from testfleet.worker.orphan_guard import main, start_orphan_guard

# Double-forks a setsid grandchild (it leaves the group and is reparented); the
# grandchild and the leader print their pids (one write each: a line never splits).
ESCAPER = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(1, f"{os.getpid()}\\n".encode())
        time.sleep(120)
    os._exit(0)
os.wait()
os.write(1, f"{os.getpid()}\\n".encode())
time.sleep(120)
"""
# A chain of 31 processes, each started by the one before in a session of its
# own, the newest printing its pid: bounded, unlike a real fork bomb.
CHAIN = """
import os, time
for depth in range(30):
    if os.fork():
        break
    os.setsid()
else:
    print(os.getpid(), flush=True)
time.sleep(120)
"""


def spawn_marked(mark: str, script: str = ESCAPER) -> subprocess.Popen[str]:
    """Runs ``script`` marked ``mark``; the caller reads its pids (lines) from stdout."""
    env = {**os.environ, MARK_VARIABLE: mark}
    return subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )


def read_pids(process: subprocess.Popen[str], count: int) -> list[int]:
    assert process.stdout is not None
    return [int(process.stdout.readline()) for _ in range(count)]


def finish(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


async def test_end_marked_ends_every_marked_process_and_only_those() -> None:
    worker = secrets.token_hex(8)
    mine = spawn_marked(attempt_mark(1, worker))
    other = spawn_marked(attempt_mark(11, worker))  # a prefix of neither is a match
    try:
        pids = read_pids(mine, 2)  # the leader and its escaped grandchild
        read_pids(other, 2)
        found = find_marked(attempt_mark(1, worker))
        assert sorted(found) == sorted(pids)

        ended = await end_marked(attempt_mark(1, worker), grace_seconds=5.0)
        assert sorted(ended) == sorted(found)
        assert await all_exited(found)
        assert len(find_marked(attempt_mark(11, worker))) == 2
    finally:
        kill_marked(f"{worker}-", prefix=True)
        finish(mine)
        finish(other)


async def test_kill_marked_ends_a_whole_chain_of_sessions() -> None:
    worker = secrets.token_hex(8)
    chain = spawn_marked(attempt_mark(3, worker), CHAIN)
    try:
        read_pids(chain, 1)  # the newest link exists: so do all the others
        assert len(find_marked(attempt_mark(3, worker))) == 31
    finally:
        killed = kill_marked(f"{worker}-", prefix=True)
        finish(chain)
    assert len(killed) == 31
    assert await all_exited(killed)
    assert find_marked(f"{worker}-", prefix=True) == []


async def test_the_guard_kills_its_workers_marked_processes_when_its_pipe_closes() -> None:
    worker = secrets.token_hex(8)
    guard = start_orphan_guard(worker)
    assert guard is not None
    task = spawn_marked(attempt_mark(5, worker))
    try:
        pids = read_pids(task, 2)
        assert sorted(find_marked(attempt_mark(5, worker))) == sorted(pids)
        guard.close()  # as when the worker dies: its end of the pipe closes
        assert guard.process.returncode == 0
        assert await all_exited(pids)
    finally:
        kill_marked(f"{worker}-", prefix=True)
        finish(task)


def test_the_guard_without_a_mark_says_how_to_call_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
