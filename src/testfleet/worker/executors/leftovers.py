"""What a worker killed outright leaves running, and how its next start ends it.

Callers: the command and benchmark executors :func:`remember` each child's
process group when they start it and :func:`forget` it when they are done with
it; ``testfleet worker`` calls :func:`reap_leftovers` once before it connects.

A worker stopped with SIGKILL (or a machine's OOM killer, or a crash) cannot
end its tasks' process groups: they run on as orphans, holding CPU, memory,
GPUs and ports while the coordinator has already rerun their tasks elsewhere.
So each running group has a small record under ``<work dir>/running/``, named
after the worker process that started it. At start, a worker ends the groups of
records whose worker process is gone — and only those: several workers may
share a work directory, and a live one's children are its own business. Pids
are reused, so a process counts as the recorded one only if its start time
matches too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

RUNNING_DIR = "running"


def _started(pid: int) -> float | None:
    """The process's start time (seconds since the epoch), or None if it is gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _alive(pid: int, started: float) -> bool:
    now = _started(pid)
    return now is not None and abs(now - started) < 0.01


def _record_path(work_dir: Path, attempt_id: int) -> Path:
    return work_dir / RUNNING_DIR / f"{os.getpid()}-{attempt_id}.json"


def remember(work_dir: Path, attempt_id: int, pid: int) -> None:
    """Record that this worker process runs ``pid``'s process group for ``attempt_id``.

    Never raises: a worker that cannot write its work directory still runs the
    task (it only loses the clean-up after a crash).
    """
    try:
        record = {
            "worker_pid": os.getpid(),
            "worker_started": _started(os.getpid()),
            "pid": pid,
            "started": _started(pid),
            "attempt_id": attempt_id,
        }
        path = _record_path(work_dir, attempt_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    except OSError as exc:
        log.warning("cannot record process group %d: %s", pid, exc)


def forget(work_dir: Path, attempt_id: int) -> None:
    """The group of ``attempt_id`` has been ended or has exited: drop its record."""
    with contextlib.suppress(OSError):
        _record_path(work_dir, attempt_id).unlink(missing_ok=True)


def reap_leftovers(work_dir: Path) -> list[int]:
    """End the process groups that dead worker processes left running.

    Returns the process group ids it signalled. Records of live workers are
    left alone; records whose group is already gone are removed.
    """
    ended: list[int] = []
    folder = work_dir / RUNNING_DIR
    if not folder.is_dir():
        return ended
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            worker_pid, worker_started = int(record["worker_pid"]), record["worker_started"]
            pid, started = int(record["pid"]), record["started"]
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if worker_started is not None and _alive(worker_pid, float(worker_started)):
            continue  # its worker still runs: not an orphan
        if started is not None and _alive(pid, float(started)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                ended.append(pid)
        with contextlib.suppress(OSError):
            path.unlink()
    return ended
