"""A running attempt's output, streamed to the coordinator as bounded, rate-limited chunks.

Callers: the worker agent makes one :class:`LogStream` per attempt it starts
and hands its :meth:`LogStream.write` to the executor as
``ExecutionContext.report_output``; the ``command`` executor calls it with
every piece of output it reads from the child's pipe. When the attempt ends
the agent calls :meth:`LogStream.close`, which sends what is still pending
*before* the agent queues the result, so a follower sees the last line.

Why bounded and rate-limited: the live tail is for a person watching, and
must never cost the task or the fleet anything. So writing never blocks and
never fails; at most ``chunks_per_second`` chunks leave per attempt, each at
most ``max_chunk_bytes`` (plus a short marker); output written faster than
that keeps its beginning and its end, and the middle is replaced by a marker
saying how many bytes were skipped (``[… 12,345 bytes skipped …]``). The
full output (up to the executor's own limit) still travels in the result.

:class:`LogCoalescer` is the pure part (bytes in, text chunks out, time
handed in), unit-tested without a clock; :class:`LogStream` drives it on the
agent's clock.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Callable
from dataclasses import dataclass

from testfleet.clock import Clock
from testfleet.protocol.messages import LogChunk

#: Defaults: 4 chunks/s of at most 16 KiB is 64 KiB/s per attempt at most,
#: plenty to follow a log and small beside the worker's frame-rate limit.
DEFAULT_MAX_CHUNK_BYTES = 16 * 1024
DEFAULT_CHUNKS_PER_SECOND = 4.0


@dataclass(frozen=True, slots=True)
class LogLimits:
    """How much of an attempt's output may leave, and how often."""

    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    chunks_per_second: float = DEFAULT_CHUNKS_PER_SECOND

    def __post_init__(self) -> None:
        if self.max_chunk_bytes < 2:
            raise ValueError("max_chunk_bytes must be at least 2")
        if not self.chunks_per_second > 0:
            raise ValueError("chunks_per_second must be positive")

    @property
    def interval(self) -> float:
        """Seconds between two chunks of one attempt, at least."""
        return 1.0 / self.chunks_per_second


def skip_marker(skipped: int) -> str:
    """The line that stands for output left out of a chunk (the reader sees it)."""
    return f"\n[… {skipped:,} bytes skipped …]\n"


class LogCoalescer:
    """Output bytes gathered into text chunks; pure (the caller passes the time).

    Pending output is kept as a head (the first half of a chunk) and a tail
    (the last half) once it outgrows one chunk, so memory stays under
    ``max_chunk_bytes`` however much is written between two chunks.
    """

    def __init__(self, limits: LogLimits | None = None) -> None:
        self.limits = limits or LogLimits()
        self._head = bytearray()
        self._tail = bytearray()
        self._skipped = 0
        self._last_sent: float | None = None
        # Output is cut at byte boundaries; the decoder keeps a character split
        # across two writes (or two chunks) whole.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        #: Bytes left out of chunks so far (in skip markers), for tests and logs.
        self.skipped_total = 0

    @property
    def pending(self) -> bool:
        return bool(self._head or self._tail or self._skipped)

    def write(self, data: bytes) -> None:
        """Add output; never blocks, keeps at most one chunk's worth pending."""
        if not data:
            return
        limit = self.limits.max_chunk_bytes
        if not self._skipped and len(self._head) + len(data) <= limit:
            self._head += data
            return
        half = limit // 2
        if not self._skipped:
            # First overflow: the head keeps the first half, the rest is tail.
            self._tail = self._head[half:]
            del self._head[half:]
        self._tail += data
        excess = len(self._tail) - (limit - half)
        if excess > 0:
            self._skipped += excess
            del self._tail[:excess]

    def next_due(self) -> float | None:
        """When :meth:`take` may next return a chunk (None: nothing pending)."""
        if not self.pending:
            return None
        if self._last_sent is None:
            return float("-inf")
        return self._last_sent + self.limits.interval

    def take(self, now: float) -> str | None:
        """The pending output as one chunk, if the rate allows one at ``now``."""
        due = self.next_due()
        if due is None or now < due:
            return None
        text = self._drain(final=False)
        if not text:
            return None  # only part of a character so far: it waits for the rest
        self._last_sent = now
        return text

    def flush(self) -> str | None:
        """Everything pending, whatever the rate (the attempt has ended)."""
        text = self._drain(final=True)
        return text or None

    def _drain(self, *, final: bool) -> str:
        head, tail, skipped = bytes(self._head), bytes(self._tail), self._skipped
        self._head.clear()
        self._tail.clear()
        self._skipped = 0
        if not skipped:
            return self._decoder.decode(head, final=final)
        # The head ends and the tail starts at arbitrary bytes: a character cut
        # there is part of what was skipped, not a replacement character shown.
        text = self._decoder.decode(head, final=False)
        self._decoder.reset()
        orphans = 0
        while orphans < min(3, len(tail)) and 0x80 <= tail[orphans] <= 0xBF:
            orphans += 1
        self.skipped_total += skipped + orphans
        return text + skip_marker(skipped + orphans) + self._decoder.decode(tail[orphans:], final)


class LogStream:
    """One attempt's output on its way to the coordinator (see the module docstring).

    ``send`` queues a frame and must not block (the agent's ``_send_soon``,
    which drops frames while disconnected: live output is not worth keeping).
    """

    def __init__(
        self,
        attempt_id: int,
        send: Callable[[LogChunk], None],
        clock: Clock,
        limits: LogLimits | None = None,
    ) -> None:
        self.attempt_id = attempt_id
        self._send = send
        self._clock = clock
        self._coalescer = LogCoalescer(limits)
        self._waker: asyncio.Task[None] | None = None
        self._closed = False
        #: Chunks sent so far.
        self.sent = 0

    @property
    def skipped_total(self) -> int:
        return self._coalescer.skipped_total

    def write(self, data: bytes) -> None:
        """Called by an executor with each piece of output; returns at once."""
        if self._closed:
            return
        self._coalescer.write(data)
        self._send_due()

    def close(self) -> None:
        """Send what is pending now (called by the agent before it queues the result)."""
        if self._closed:
            return
        self._closed = True
        if self._waker is not None:
            self._waker.cancel()
            self._waker = None
        text = self._coalescer.flush()
        if text is not None:
            self._emit(text)

    def _emit(self, text: str) -> None:
        self.sent += 1
        self._send(LogChunk(attempt_id=self.attempt_id, data=text))

    def _send_due(self) -> None:
        text = self._coalescer.take(self._clock.now())
        if text is not None:
            self._emit(text)
        if self._coalescer.pending and self._waker is None:
            self._waker = asyncio.get_running_loop().create_task(
                self._send_later(), name=f"log-stream-{self.attempt_id}"
            )

    async def _send_later(self) -> None:
        """Wait out the rate, then send what gathered meanwhile."""
        try:
            while not self._closed:
                due = self._coalescer.next_due()
                if due is None:
                    break  # sent it all (or only part of a character is held)
                wait = due - self._clock.now()
                if wait > 0:
                    await self._clock.sleep(wait)
                text = self._coalescer.take(self._clock.now())
                if text is not None:
                    self._emit(text)
        finally:
            if self._waker is asyncio.current_task():
                self._waker = None
