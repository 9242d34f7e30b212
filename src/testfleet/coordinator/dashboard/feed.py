"""The dashboard's one event stream: a bounded ring of recent events, fed by a sampler.

Callers: the ``/dashboard/events`` route (:mod:`.routes`) streams
:meth:`DashboardFeed.stream` to each open page (``text/event-stream``); the
pages' htmx SSE extension swaps the fragments in and ``dashboard.js`` appends
the chart points.

Why a sampler and a ring: the coordinator's loop must not do work per task for
the dashboard (invariant 3 keeps it the one writer, and the dispatch benchmark
holds it to its throughput). So nothing here is told about tasks; a sampler
runs at most every ``interval`` seconds on the coordinator's clock, asks
:class:`Sample` for the current fragments (read from the state view, see
:mod:`.live`), and appends those that changed to a ring of ``capacity``
events. Ten pages or a thousand cost the loop the same: one sample per
interval. The sampler runs only while someone listens, so a coordinator
nobody watches pays nothing.

Resuming: each event has an increasing ``id``. A browser's EventSource sends
the last one it saw as ``Last-Event-ID`` when it reconnects; if every event
after it is still in the ring, those are sent, else (or with no id, or an id
from before a restart) the latest event of each kind, which is the whole
current state because every fragment event replaces what it shows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from testfleet.clock import Clock


class FeedKind(StrEnum):
    """The SSE ``event:`` names the pages listen for."""

    #: The overview's counters, a server-rendered HTML fragment (``sse-swap``).
    OVERVIEW = "overview"
    #: The workers changed (status, slots, attempts): workers pages reload their rows.
    WORKERS = "workers"
    #: Tasks changed (the loop applied events): task lists reload their rows.
    TASKS = "tasks"
    #: One chart point, JSON (``dashboard.js`` appends it).
    POINT = "point"


#: Kinds whose newest event is the whole current state (resent on a fresh connect).
SNAPSHOT_KINDS = (FeedKind.OVERVIEW, FeedKind.WORKERS, FeedKind.TASKS)


@dataclass(frozen=True, slots=True)
class FeedEvent:
    id: int
    kind: FeedKind
    data: str

    def encode(self) -> str:
        """The event in the ``text/event-stream`` format (one ``data:`` line per line)."""
        lines = "".join(f"data: {line}\n" for line in self.data.split("\n"))
        return f"id: {self.id}\nevent: {self.kind.value}\n{lines}\n"


#: What the sampler asks for: the current (kind, data) pairs.
Sample = Callable[[], Awaitable[list[tuple[FeedKind, str]]]]


def parse_last_event_id(value: str | None) -> int | None:
    """The ``Last-Event-ID`` header as an event id, or None (absent, or not ours)."""
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


class DashboardFeed:
    """The ring and its sampler (see the module docstring)."""

    def __init__(
        self, sample: Sample, clock: Clock, *, interval: float = 1.0, capacity: int = 256
    ) -> None:
        if interval <= 0 or capacity < len(FeedKind):
            raise ValueError("a feed needs a positive interval and room for each kind")
        self._sample = sample
        self._clock = clock
        self.interval = interval
        self._ring: deque[FeedEvent] = deque(maxlen=capacity)
        self._latest: dict[FeedKind, FeedEvent] = {}
        self._next_id = 1
        self._changed = asyncio.Condition()
        self._listeners = 0
        self._sampler: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def listeners(self) -> int:
        return self._listeners

    @property
    def sampling(self) -> bool:
        return self._sampler is not None and not self._sampler.done()

    def publish(self, kind: FeedKind, data: str) -> FeedEvent | None:
        """Append an event unless it repeats the latest of its kind (points always go)."""
        latest = self._latest.get(kind)
        if kind is not FeedKind.POINT and latest is not None and latest.data == data:
            return None
        event = FeedEvent(self._next_id, kind, data)
        self._next_id += 1
        self._ring.append(event)
        self._latest[kind] = event
        return event

    def since(self, last_id: int | None) -> list[FeedEvent]:
        """What a client that saw ``last_id`` should get now (see the module docstring)."""
        if last_id is not None and self._ring and last_id < self._next_id:
            first = self._ring[0].id
            if last_id >= first - 1:
                return [event for event in self._ring if event.id > last_id]
        return sorted(
            (self._latest[kind] for kind in FeedKind if kind in self._latest),
            key=lambda event: event.id,
        )

    async def sample_once(self) -> None:
        """Take one sample and wake the streams if anything was appended."""
        appended = [self.publish(kind, data) for kind, data in await self._sample()]
        if any(event is not None for event in appended):
            async with self._changed:
                self._changed.notify_all()

    async def _run(self) -> None:
        while self._listeners > 0 and not self._closed:
            await self.sample_once()
            await self._clock.sleep(self.interval)

    def _ensure_sampling(self) -> None:
        if not self.sampling and not self._closed:
            self._sampler = asyncio.create_task(self._run(), name="dashboard-sampler")

    async def stream(self, last_event_id: str | None, lifetime: float) -> AsyncGenerator[str]:
        """Encoded events for one client: what it missed, then each new one, for
        ``lifetime`` seconds of the clock; then it ends and the browser reconnects
        (with its ``Last-Event-ID``), so no stream lives forever."""
        self._listeners += 1
        try:
            if not self._latest:
                await self.sample_once()
            self._ensure_sampling()
            until = self._clock.now() + lifetime
            seen = parse_last_event_id(last_event_id)
            # ``retry``: how long the browser waits before it reconnects.
            yield f"retry: {int(self.interval * 1000)}\n\n"
            while not self._closed:
                for event in self.since(seen):
                    seen = event.id
                    yield event.encode()
                remaining = until - self._clock.now()
                if remaining <= 0:
                    return
                await self._wait_after(seen, remaining)
        finally:
            self._listeners -= 1

    async def _wait_after(self, seen: int | None, remaining: float) -> None:
        """Until an event newer than ``seen`` is appended, ``remaining`` seconds pass, or close."""

        async def newer() -> None:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: self._closed or (self._next_id - 1) > (seen or 0)
                )

        waiter = asyncio.ensure_future(newer())
        timer = asyncio.ensure_future(self._clock.sleep(remaining))
        try:
            await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, timer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def close(self) -> None:
        """End every stream and the sampler (the coordinator is stopping)."""
        self._closed = True
        async with self._changed:
            self._changed.notify_all()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
