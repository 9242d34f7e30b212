"""A restarted worker ends the process groups a dead worker left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
from process_signals import Fifo, exited

from testfleet.worker.executors.leftovers import RUNNING_DIR, forget, reap_leftovers, remember
from testfleet.worker.executors.process_group import group_has_live_members


def start_group(announce: Path | None = None) -> subprocess.Popen[bytes]:
    """A task-like child leading its own group, with a grandchild in it; the
    grandchild's pid goes to ``announce`` (a :class:`Fifo`'s path) if given."""
    told = f" echo $! > {announce};" if announce is not None else ""
    return subprocess.Popen(
        ["sh", "-c", f"sleep 60 &{told} wait"], start_new_session=True, stdin=subprocess.DEVNULL
    )


def dead_process() -> tuple[int, float]:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(finished.pid).create_time()
    finished.wait()
    return finished.pid, started


def write_record(work_dir: Path, name: str, worker: tuple[int, float], child: int) -> Path:
    path = work_dir / RUNNING_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "worker_pid": worker[0],
        "worker_started": worker[1],
        "pid": child,
        "started": psutil.Process(child).create_time(),
        "attempt_id": 1,
    }
    path.write_text(json.dumps(record))
    return path


async def test_groups_of_a_dead_worker_are_ended_and_live_workers_are_left_alone(
    tmp_path: Path, fifo: Callable[[str], Fifo]
) -> None:
    announced = fifo("orphan-grandchild.pid")
    orphan, kept = start_group(announced.path), start_group()
    try:
        [grandchild] = map(int, await announced.read_lines(1))
        dead_worker = dead_process()
        me = (os.getpid(), psutil.Process().create_time())
        orphan_record = write_record(tmp_path, "dead-1", dead_worker, orphan.pid)
        kept_record = write_record(tmp_path, "live-1", me, kept.pid)
        (tmp_path / RUNNING_DIR / "garbage.json").write_text("{not json")

        assert reap_leftovers(tmp_path) == [orphan.pid]

        assert orphan.wait(10) == -9
        # The grandchild went with its group: its pidfd says when it has exited
        # (SIGKILL is delivered, not done, when killpg returns).
        assert await exited(grandchild)
        assert not group_has_live_members(orphan.pid)
        assert not orphan_record.exists()
        assert not (tmp_path / RUNNING_DIR / "garbage.json").exists()
        assert kept.poll() is None  # a live worker's task is its own business
        assert kept_record.exists()
    finally:
        for process in (orphan, kept):
            if process.poll() is None:
                os.killpg(process.pid, 9)
                process.wait()


def test_a_reused_pid_is_not_mistaken_for_the_recorded_process(tmp_path: Path) -> None:
    stranger = start_group()
    try:
        path = write_record(tmp_path, "dead-2", dead_process(), stranger.pid)
        record = json.loads(path.read_text())
        record["started"] -= 1000  # the recorded child started long before this one
        path.write_text(json.dumps(record))
        assert reap_leftovers(tmp_path) == []
        assert stranger.poll() is None
        assert not path.exists()
    finally:
        os.killpg(stranger.pid, 9)
        stranger.wait()


def test_remember_and_forget_keep_one_record_per_running_attempt(tmp_path: Path) -> None:
    child = start_group()
    try:
        remember(tmp_path, 42, child.pid)
        records = list((tmp_path / RUNNING_DIR).glob("*.json"))
        assert len(records) == 1
        assert json.loads(records[0].read_text())["pid"] == child.pid
        assert reap_leftovers(tmp_path) == []  # its worker (this process) is alive
        forget(tmp_path, 42)
        assert list((tmp_path / RUNNING_DIR).glob("*.json")) == []
    finally:
        os.killpg(child.pid, 9)
        child.wait()


def test_an_unwritable_work_dir_does_not_stop_a_task(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    remember(blocker, 1, os.getpid())  # logs, does not raise
    assert reap_leftovers(blocker) == []
