"""What the dashboard's event stream carries: one sample of the live state.

Callers: :class:`.feed.DashboardFeed` calls :meth:`LiveSampler.sample` at most
once per interval while a page listens. Each sample reads the state view
(copies, on the loop's own event loop, so never half a turn) and renders the
overview fragment; the workers and tasks events carry only a fingerprint that
changes when they do, and the pages then fetch their own filtered rows. The
chart point needs finished-task counts, which only the store has: it is read
in a thread every ``point_every`` samples, one ``GROUP BY status``, not per task.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable

from testfleet.clock import Clock
from testfleet.coordinator.dashboard.feed import FeedKind
from testfleet.coordinator.dashboard.history import chart_point
from testfleet.coordinator.dashboard.templates import Templates
from testfleet.coordinator.dashboard.views import fleet_state, overview
from testfleet.coordinator.health import CoordinatorHealth
from testfleet.coordinator.state_view import StateView
from testfleet.domain.enums import TaskStatus
from testfleet.store.contract import StoreReader


class LiveSampler:
    """Turns the live state into feed events (see the module docstring)."""

    def __init__(
        self,
        view: StateView,
        store: StoreReader,
        clock: Clock,
        templates: Templates,
        started: float,
        loop_events: Callable[[], int],
        *,
        point_every: int = 5,
        firing_alerts: Callable[[], int] = lambda: 0,
        health: Callable[[], CoordinatorHealth | None] = lambda: None,
    ) -> None:
        self._view = view
        self._store = store
        self._clock = clock
        self._templates = templates
        self._started = started
        self._loop_events = loop_events
        self._point_every = point_every
        self._firing_alerts = firing_alerts
        self._health = health
        self._samples = 0
        #: (time, finished, completed) at the last chart point.
        self._last_counts: tuple[float, int, int] | None = None

    async def sample(self) -> list[tuple[FeedKind, str]]:
        view = self._view
        queue = view.queue_depth()
        workers = view.workers()
        shown = overview(
            workers,
            view.queue_levels(),
            queue.delayed,
            view.unschedulable_counts(),
            self._started,
            firing_alerts=self._firing_alerts(),
            health=self._health(),
        )
        fragment = self._templates.render("_overview.html", o=shown, now=self._clock.now())
        # Heartbeat times are left out: the pages count ages up themselves.
        fingerprint = "|".join(
            f"{w.record.worker_id}:{fleet_state(w).value}:{w.running}:{w.record.slots}"
            for w in workers
        )
        events = [
            (FeedKind.OVERVIEW, fragment),
            (FeedKind.WORKERS, _digest(fingerprint)),
            (FeedKind.TASKS, str(self._loop_events())),
        ]
        if self._samples % self._point_every == 0:
            point = await self._point()
            if point is not None:
                events.append((FeedKind.POINT, json.dumps(point)))
        self._samples += 1
        return events

    async def _point(self) -> dict[str, float | None] | None:
        counts = await asyncio.to_thread(self._store.status_counts)
        now = self._clock.now()
        finished = sum(n for status, n in counts.items() if status.is_terminal)
        completed = counts.get(TaskStatus.COMPLETED, 0)
        last, self._last_counts = self._last_counts, (now, finished, completed)
        if last is None:
            return None
        return chart_point(now, now - last[0], finished - last[1], completed - last[2])


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
