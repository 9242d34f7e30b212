"""A task's child process and its process group: waiting, ending, reading its output.

Callers: the command and benchmark executors. Each runs its child in a session
of its own (``start_new_session=True``), so the child leads a process group and
everything it spawns stays in it; ending the *group* ends the task's whole tree.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
from collections.abc import Callable
from enum import StrEnum

#: How often :func:`end_group` looks whether the group is gone.
POLL_SECONDS = 0.05


class Ending(StrEnum):
    """How waiting for a child ended."""

    EXITED = "exited"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class OutputTail(asyncio.Protocol):
    """Keeps the last ``limit`` bytes read from the pipe; counts the rest.

    ``listener`` (the attempt's ``ExecutionContext.report_output``, the live
    log stream) sees every piece as it is read, before the limit applies.
    """

    def __init__(self, limit: int, listener: Callable[[bytes], None] | None = None) -> None:
        self._limit = limit
        self._listener = listener
        self._chunks: collections.deque[bytes] = collections.deque()
        self._kept = 0
        self.total = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        if self._listener is not None:
            self._listener(data)
        if self._limit == 0:
            return
        self._chunks.append(data)
        self._kept += len(data)
        # Drop whole chunks while the rest still covers the limit: O(1) per
        # chunk, where trimming a bytearray would copy up to the limit each time.
        while self._chunks and self._kept - len(self._chunks[0]) >= self._limit:
            self._kept -= len(self._chunks.popleft())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def tail(self) -> bytes:
        if self._limit == 0:
            return b""
        return b"".join(self._chunks)[-self._limit :]


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the group; False when no process is left in it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member changed its user id (setuid program); the rest got the signal.
        return True
    return True


async def wait_for_exit(
    process: asyncio.subprocess.Process, cancel_event: asyncio.Event, seconds: float
) -> Ending:
    """Wait for the child to exit, the attempt to be cancelled, or ``seconds`` to pass."""
    exited = asyncio.ensure_future(process.wait())
    cancelled = asyncio.ensure_future(cancel_event.wait())
    try:
        done, _ = await asyncio.wait(
            {exited, cancelled},
            timeout=max(0.0, seconds),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        exited.cancel()
        cancelled.cancel()
    # An exit that raced the timeout or a cancel counts: the work did finish.
    if exited in done:
        return Ending.EXITED
    return Ending.CANCELLED if cancelled in done else Ending.TIMED_OUT


async def end_group(pgid: int, grace_seconds: float) -> None:
    """SIGTERM the group, give it ``grace_seconds`` to go, then SIGKILL what is left."""
    if not signal_group(pgid, signal.SIGTERM):
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_seconds
    while loop.time() < deadline:
        await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - loop.time())))
        if not group_has_live_members(pgid):
            return
    signal_group(pgid, signal.SIGKILL)


def group_has_live_members(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies do not count).

    Signal 0 alone is not enough: a killed grandchild is reparented to PID 1,
    and until PID 1 reaps it (seconds in some containers, never where the
    worker itself is PID 1 without an init) it is a zombie that still counts as
    a group member. Where /proc exists we look for a member that is not a
    zombie; elsewhere (macOS) signal 0 is the best available answer.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False
