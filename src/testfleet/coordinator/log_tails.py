"""Live log tails: the last output of each running attempt, in memory, bounded.

Who calls it: :class:`~testfleet.coordinator.state.CoordinatorState` (the one
writer) feeds it from the workers' ``log`` frames (:meth:`LogTails.add`, only
for an attempt that is open on the worker that sent the frame) and sweeps it
on every tick (:meth:`LogTails.sweep`); the log routes
(:mod:`~testfleet.coordinator.log_api`) read it (:meth:`LogTails.read`). They
run on the coordinator's event loop, between the loop's turns, so a read
never sees half a change, and what it gets are immutable chunks.

Decisions:

* Live, not durable. A tail is for following a running attempt; the attempt's
  full log is in its result, which the store keeps. A restart loses the
  tails and nothing else.
* Every chunk gets a sequence number from one counter for the whole
  coordinator, so a reader resumes with ``after=SEQ`` and a retry's chunks
  come after the previous attempt's. A reader whose ``after`` is beyond every
  number issued (it read a coordinator that restarted since) reads from the
  start.
* Bounded three ways: each tail keeps its last ``tail_bytes``; at most
  ``max_attempts`` tails are kept (finished ones evicted first, then the
  least recently written); a finished attempt's tail is kept
  ``finished_retention_seconds`` so a follower sees its end, then dropped.
* A worker's flood is cut twice: the channel's frame-rate limit closes a
  socket that sends too many frames, and here each attempt may add at most
  ``max_bytes_per_second``; what is over it is dropped, and the next chunk
  kept says how much (``[… N bytes dropped …]``). A chunk longer than
  ``max_chunk_bytes`` keeps its end.
* A retry's tail starts with a separator chunk naming the attempt and its
  worker (``── attempt 2 on worker w-2 ──``), made here once, so every reader
  (the REST and SSE routes, the task page, ``testfleet logs``) shows it the
  same way and a follower never sees the new output glued onto the old.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Container
from dataclasses import dataclass, field

#: Per attempt: enough to show the last screens of output, small enough that
#: DEFAULT_MAX_ATTEMPTS of them stay under 32 MiB.
DEFAULT_TAIL_BYTES = 64 * 1024
DEFAULT_MAX_ATTEMPTS = 512
DEFAULT_FINISHED_RETENTION_SECONDS = 300.0
#: Twice what a worker sends at most (4 chunks/s of 16 KiB, worker/log_stream.py).
DEFAULT_MAX_BYTES_PER_SECOND = 128 * 1024
DEFAULT_MAX_CHUNK_BYTES = 32 * 1024


def dropped_marker(dropped: int) -> str:
    """What stands for output the coordinator dropped (over its per-attempt rate)."""
    return f"[… {dropped:,} bytes dropped: more than the coordinator keeps per second …]\n"


def attempt_separator(attempt: int, worker_id: str) -> str:
    """The line that opens a retried attempt's tail (attempt numbers count from 1)."""
    return f"── attempt {attempt} on worker {worker_id} ──\n"


def cut_marker(cut: int) -> str:
    """What stands for the start of a chunk that was longer than a chunk may be."""
    return f"[… {cut:,} bytes cut: a chunk longer than the coordinator keeps …]\n"


@dataclass(frozen=True, slots=True)
class TailChunk:
    """One piece of an attempt's output as the coordinator received it."""

    seq: int
    data: str
    received_at: float


@dataclass(frozen=True, slots=True)
class TailRead:
    """What :meth:`LogTails.read` returns: the chunks after the reader's seq."""

    attempt_id: int
    task_id: str
    worker_id: str
    chunks: tuple[TailChunk, ...]
    #: The seq to resume from (the last chunk's, or the reader's own when none).
    next_after: int
    #: Output between the reader's seq and the first chunk returned was
    #: dropped from the bounded tail: the reader missed some.
    missed: bool
    #: The attempt has ended (its result, or its loss, was recorded).
    finished: bool


@dataclass(slots=True)
class _Tail:
    attempt_id: int
    task_id: str
    worker_id: str
    chunks: collections.deque[TailChunk] = field(default_factory=collections.deque)
    kept_bytes: int = 0
    #: The highest seq dropped from this tail to keep it bounded (0: none).
    evicted_through: int = 0
    finished_at: float | None = None
    window_started: float = float("-inf")
    window_bytes: int = 0
    #: Bytes dropped for the rate and not yet reported in a marker.
    unreported_drop: int = 0


class LogTails:
    """The tails of running (and recently finished) attempts; see the module docstring."""

    def __init__(
        self,
        *,
        tail_bytes: int = DEFAULT_TAIL_BYTES,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        finished_retention_seconds: float = DEFAULT_FINISHED_RETENTION_SECONDS,
        max_bytes_per_second: int = DEFAULT_MAX_BYTES_PER_SECOND,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    ) -> None:
        self.tail_bytes = tail_bytes
        self.max_attempts = max_attempts
        self.finished_retention_seconds = finished_retention_seconds
        self.max_bytes_per_second = max_bytes_per_second
        self.max_chunk_bytes = min(max_chunk_bytes, tail_bytes)
        #: By attempt id, least recently written first.
        self._tails: collections.OrderedDict[int, _Tail] = collections.OrderedDict()
        self._seq = 0
        #: Chunks refused because their attempt is not open on the sending worker.
        self.ignored_chunks = 0
        #: Bytes dropped for the per-attempt rate.
        self.dropped_bytes = 0
        #: Set (and replaced) at the next change; see :meth:`changed`.
        self._changed: asyncio.Event | None = None

    def changed(self) -> asyncio.Event:
        """An event set at the next chunk kept or tail finished: the log stream
        (SSE) waits on it instead of polling. Setting it is not I/O; the state
        stays free of awaits."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    @property
    def last_seq(self) -> int:
        """The last sequence number issued."""
        return self._seq

    def __len__(self) -> int:
        return len(self._tails)

    def ignore(self) -> None:
        """Count a chunk the state refused (not an open attempt of its worker)."""
        self.ignored_chunks += 1

    def add(
        self,
        attempt_id: int,
        task_id: str,
        worker_id: str,
        data: str,
        now: float,
        *,
        attempt: int = 1,
    ) -> None:
        """Keep a chunk of an open attempt's output. The caller (the state) has
        checked that the attempt is open on ``worker_id``; ``attempt`` is the
        attempt's number for its task (above 1: a retry, whose tail starts with
        :func:`attempt_separator`)."""
        if not data:
            return
        tail = self._tails.get(attempt_id)
        if tail is None:
            self._make_room()
            tail = self._tails[attempt_id] = _Tail(attempt_id, task_id, worker_id)
            if attempt > 1:
                self._keep(tail, self._separator(task_id, attempt, worker_id), now)
        else:
            self._tails.move_to_end(attempt_id)
        size = len(data.encode("utf-8", errors="replace"))
        if now - tail.window_started >= 1.0:
            tail.window_started, tail.window_bytes = now, 0
        if tail.window_bytes + size > self.max_bytes_per_second:
            tail.unreported_drop += size
            self.dropped_bytes += size
            return
        tail.window_bytes += size
        if size > self.max_chunk_bytes:
            kept = data.encode("utf-8", errors="replace")[-self.max_chunk_bytes :]
            data = cut_marker(size - len(kept)) + kept.decode("utf-8", errors="ignore")
        if tail.unreported_drop:
            data = dropped_marker(tail.unreported_drop) + data
            tail.unreported_drop = 0
        self._keep(tail, data, now)
        self._notify()

    def _separator(self, task_id: str, attempt: int, worker_id: str) -> str:
        """The separator for a new tail of ``task_id``, on a line of its own even
        when the previous attempt's output (if still kept) ended mid-line."""
        # The new tail is in the map already, still empty: it is not matched.
        previous = next(
            (t for t in reversed(self._tails.values()) if t.task_id == task_id and t.chunks),
            None,
        )
        glued = previous is not None and not previous.chunks[-1].data.endswith("\n")
        return ("\n" if glued else "") + attempt_separator(attempt, worker_id)

    def _keep(self, tail: _Tail, data: str, now: float) -> None:
        """Append ``data`` as the next chunk of ``tail`` and keep the tail bounded."""
        self._seq += 1
        chunk = TailChunk(self._seq, data, now)
        tail.chunks.append(chunk)
        tail.kept_bytes += len(data)
        while len(tail.chunks) > 1 and tail.kept_bytes > self.tail_bytes:
            old = tail.chunks.popleft()
            tail.kept_bytes -= len(old.data)
            tail.evicted_through = old.seq

    def _make_room(self) -> None:
        """Drop one tail when full: the longest finished, else the least recently written."""
        if len(self._tails) < self.max_attempts:
            return
        finished = [t for t in self._tails.values() if t.finished_at is not None]
        victim = (
            min(finished, key=lambda t: t.finished_at or 0.0).attempt_id
            if finished
            else next(iter(self._tails))
        )
        del self._tails[victim]

    def sweep(self, open_attempts: Container[int], now: float) -> None:
        """Mark the tails of attempts no longer open as finished, and drop the
        ones finished longer than the retention. Called by the state each tick."""
        expired: list[int] = []
        for attempt_id, tail in self._tails.items():
            if tail.finished_at is None:
                if attempt_id not in open_attempts:
                    tail.finished_at = now
                    self._notify()
            elif now - tail.finished_at >= self.finished_retention_seconds:
                expired.append(attempt_id)
        for attempt_id in expired:
            del self._tails[attempt_id]

    def read(self, attempt_id: int, after: int = 0) -> TailRead | None:
        """The chunks of ``attempt_id`` with a seq above ``after`` (None: no
        tail is kept for it: it wrote nothing, or it was evicted)."""
        tail = self._tails.get(attempt_id)
        if tail is None:
            return None
        if after > self._seq:
            after = 0  # a seq from before this coordinator started
        chunks = tuple(c for c in tail.chunks if c.seq > after)
        return TailRead(
            attempt_id=attempt_id,
            task_id=tail.task_id,
            worker_id=tail.worker_id,
            chunks=chunks,
            next_after=chunks[-1].seq if chunks else after,
            missed=after < tail.evicted_through,
            finished=tail.finished_at is not None,
        )
