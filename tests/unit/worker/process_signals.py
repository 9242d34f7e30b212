"""Waiting on real child processes by a signal they give, never by sleeping and looking again.

Callers: the worker's executor and pytest-session tests, which run real
children and must know when one has started something (it writes a line to a
:class:`Fifo`) or has ended (:func:`exited`, on a pidfd: the kernel says so).
A test that sleeps and polls can fail because the machine is slow; these
waits end at the event itself. Each still takes a limit, far beyond what the
event needs, so that a broken test fails instead of hanging; no test expects
a limit to run out.

Linux only (``os.pidfd_open``, Linux 5.3), like the CI that runs these tests.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

#: How long a wait may last before the test fails: a guard against a hang.
GUARD_SECONDS = 60.0


async def _readable(fd: int, limit: float) -> bool:
    """Whether ``fd`` became readable within ``limit`` seconds, without blocking the
    event loop (the code under test, which makes it readable, may run on it)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, limit)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


async def exited(pid: int, limit: float = GUARD_SECONDS) -> bool:
    """Whether process ``pid`` has exited, waiting up to ``limit`` seconds for it.

    A zombie has exited (it runs nothing; only its parent's reaping is left),
    and so has a process that is already gone. A pidfd becomes readable when
    its process exits, so this wakes at the exit, not at a polling tick.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return await _readable(fd, limit)
    finally:
        os.close(fd)


async def all_exited(pids: Iterable[int], limit: float = GUARD_SECONDS) -> bool:
    """Whether every process of ``pids`` has exited within ``limit`` seconds."""
    return all(await asyncio.gather(*(exited(pid, limit) for pid in pids)))


class Fifo:
    """A named pipe at ``path`` that a child writes lines to and the test reads.

    The test holds the pipe open for reading and writing from the start, so a
    child's open for writing never blocks, what it writes waits in the pipe
    until the test reads it (also after the child is gone), and no end of file
    shows between two writers. The child needs nothing special: ``echo $! >
    path`` or ``open(path, "w")`` writes to it like to a file.
    """

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._partial = b""
        self._lines: list[str] = []

    def __enter__(self) -> Fifo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def write(self, text: str) -> None:
        """Put ``text`` in the pipe (small writes never block: the test is a reader)."""
        os.write(self._fd, text.encode())

    def lines_now(self) -> list[str]:
        """The complete lines written and not yet returned, without waiting."""
        self._fill()
        lines, self._lines = self._lines, []
        return lines

    async def read_lines(self, count: int, limit: float = GUARD_SECONDS) -> list[str]:
        """The next ``count`` lines, waiting for them as they are written;
        :class:`AssertionError` if they have not all come within ``limit`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        self._fill()
        while len(self._lines) < count:
            if not await _readable(self._fd, deadline - loop.time()):
                raise AssertionError(
                    f"{self.path} got {len(self._lines)} of {count} lines within {limit:g} s"
                )
            self._fill()
        lines, self._lines = self._lines[:count], self._lines[count:]
        return lines

    def _fill(self) -> None:
        """Move what the pipe holds into complete lines (a partial one waits for its end)."""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._partial += chunk
        *complete, self._partial = self._partial.split(b"\n")
        self._lines.extend(line.decode() for line in complete)
