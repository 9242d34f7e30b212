"""The orphan guard: a small process that ends a worker's task processes when the worker dies.

Callers: ``testfleet worker`` starts one guard (:func:`start_orphan_guard`)
before it connects and closes it (:meth:`OrphanGuard.close`) when it exits.

Why: a worker stopped with SIGKILL (or crashed, or killed by the OOM killer)
cannot end its tasks; they ran on until a worker started again in the same
work directory (``executors/leftovers.py``), while the coordinator had
already rerun them elsewhere. The guard is started in a session of its own
with one end of a pipe as its stdin; the worker holds the other end and never
writes to it. When the worker process ends, however it ends, the kernel closes
its end and the guard reads end-of-file at once: it then kills every process
carrying this worker's mark (:mod:`~testfleet.worker.executors.task_processes`:
each task's leader, its group and whatever left the group) and exits. After a
clean stop there is nothing left to find, and it exits all the same.

Run as ``python -m testfleet.worker.orphan_guard WORKER_MARK``.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys

from testfleet.worker.executors.task_processes import WORKER_MARK, kill_marked

log = logging.getLogger(__name__)

#: How long :meth:`OrphanGuard.close` waits for the guard's last look.
CLOSE_WAIT_SECONDS = 5.0


class OrphanGuard:
    """The worker's handle on its guard process: keep it open while the worker runs."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        """Let the guard take its last look and exit (the worker is stopping cleanly)."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=CLOSE_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_orphan_guard(worker_mark: str = WORKER_MARK) -> OrphanGuard | None:
    """Start the guard for the processes marked ``worker_mark``; None (and a
    warning) where it cannot start: the worker then runs without it, as before."""
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "testfleet.worker.orphan_guard", worker_mark],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            # Its own session: a Ctrl-C or a SIGTERM to the worker's group leaves it be.
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("cannot start the orphan guard (task processes may outlive a crash): %s", exc)
        return None
    return OrphanGuard(process)


def main(argv: list[str]) -> int:
    """Wait for the worker to go, then kill what carries its mark."""
    if len(argv) != 1 or not argv[0]:
        print("usage: python -m testfleet.worker.orphan_guard WORKER_MARK", file=sys.stderr)
        return 2
    stdin = sys.stdin.buffer
    while stdin.read(4096):
        pass  # the worker writes nothing; only the end of the pipe matters
    killed = kill_marked(f"{argv[0]}-", prefix=True)
    if killed:
        print(
            f"testfleet orphan guard (worker pid gone): killed {len(killed)} task process(es): "
            + ", ".join(map(str, killed)),
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
