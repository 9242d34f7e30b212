"""``testfleet wait``: follow tasks until they finish, and say why any cannot run.

Callers: the ``wait`` command in ``cli/app.py``. A task that no connected
worker can run stays queued on the coordinator (it runs as soon as a worker
that fits joins), which used to leave ``wait`` polling forever in silence.
:class:`TaskWaiter` says the reason once when a task becomes unschedulable
(again when the reason changes, and when it can run after all; the
coordinator's words with their control characters made visible, as
:func:`~testfleet.cli.terminal_text.printable` writes them) and gives up
once a task has been unschedulable for ``unschedulable_timeout`` seconds in a
row; a task that becomes schedulable again starts that count afresh.

Everything that takes time is handed in (the client, a clock, a sleep), so
unit tests drive it with ``httpx.MockTransport`` and
:class:`testfleet.testing.FakeClock` and never sleep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from testfleet.cli.terminal_text import printable
from testfleet.client import FleetClient
from testfleet.clock import Clock
from testfleet.domain.enums import TaskStatus

#: Default for ``--unschedulable-timeout``: long enough for workers that are still
#: starting, or a worker reconnecting after a restart (its backoff is capped at 10 s),
#: short enough that a task nothing can run does not hold a script for long.
DEFAULT_UNSCHEDULABLE_TIMEOUT = 30.0


class WaitEnd(Enum):
    """Why :meth:`TaskWaiter.run` returned."""

    #: Every task reached a final status (completed or not).
    FINISHED = "finished"
    #: ``timeout`` passed first.
    TIMED_OUT = "timed_out"
    #: A task stayed unschedulable for ``unschedulable_timeout`` seconds.
    UNSCHEDULABLE = "unschedulable"


@dataclass
class WaitOutcome:
    end: WaitEnd
    #: The latest task document seen for each id (final ones for FINISHED).
    tasks: dict[str, dict[str, Any]]
    #: The tasks not finished when waiting ended, in the order asked for.
    waiting: list[str] = field(default_factory=list)
    #: For UNSCHEDULABLE: the tasks unschedulable that long, with their reasons.
    stuck: dict[str, str] = field(default_factory=dict)


@dataclass
class _Unschedulable:
    reason: str
    since: float


class TaskWaiter:
    """Polls ``task_ids`` every ``poll`` seconds until they are final, ``timeout`` passes
    (``None``: never), or one is unschedulable for ``unschedulable_timeout`` seconds
    (``inf``: never). ``say`` gets one line per change in a task's schedulability."""

    def __init__(
        self,
        client: FleetClient,
        task_ids: Sequence[str],
        *,
        clock: Clock,
        sleep: Callable[[float], object],
        say: Callable[[str], None],
        poll: float,
        timeout: float | None,
        unschedulable_timeout: float,
    ) -> None:
        self._client = client
        self._task_ids = list(dict.fromkeys(task_ids))
        self._clock = clock
        self._sleep = sleep
        self._say = say
        self._poll = poll
        self._timeout = timeout
        self._unschedulable_timeout = unschedulable_timeout
        self._unschedulable: dict[str, _Unschedulable] = {}

    def run(self) -> WaitOutcome:
        """Wait; raises :class:`testfleet.client.FleetError` if the coordinator refuses
        or cannot be reached."""
        started = self._clock.now()
        latest: dict[str, dict[str, Any]] = {}
        final: set[str] = set()
        while True:
            for task_id in self._task_ids:
                if task_id in final:
                    continue
                found = self._client.get_task(task_id)["task"]
                latest[task_id] = found
                if TaskStatus(found["status"]).is_terminal:
                    final.add(task_id)
                    self._unschedulable.pop(task_id, None)
                else:
                    self._note(task_id, found)
            waiting = [t for t in self._task_ids if t not in final]
            if not waiting:
                return WaitOutcome(WaitEnd.FINISHED, latest)
            now = self._clock.now()
            stuck = {
                task_id: entry.reason
                for task_id, entry in self._unschedulable.items()
                if now - entry.since >= self._unschedulable_timeout
            }
            if stuck:
                return WaitOutcome(WaitEnd.UNSCHEDULABLE, latest, waiting, stuck)
            if self._timeout is not None and now - started >= self._timeout:
                return WaitOutcome(WaitEnd.TIMED_OUT, latest, waiting)
            self._sleep(self._poll)

    def unschedulable_for(self, task_id: str) -> float:
        """Seconds ``task_id`` has been unschedulable without a break (0 if it is not)."""
        entry = self._unschedulable.get(task_id)
        return 0.0 if entry is None else self._clock.now() - entry.since

    def _note(self, task_id: str, task: dict[str, Any]) -> None:
        """Follow one task's schedulability and say what changed."""
        reason = task.get("unschedulable_reason")
        if task["status"] != TaskStatus.QUEUED.value:
            reason = None
        known = self._unschedulable.get(task_id)
        if reason:
            if known is None:
                self._unschedulable[task_id] = _Unschedulable(reason, self._clock.now())
                self._say(
                    f"{printable(task_id)} cannot run: {printable(reason)}. It stays queued "
                    "and starts when a worker that fits connects; waiting "
                    f"{self._limit_words()} for that."
                )
            elif known.reason != reason:
                known.reason = reason
                self._say(
                    f"{printable(task_id)} still cannot run, now because: {printable(reason)}"
                )
        elif known is not None:
            del self._unschedulable[task_id]
            self._say(f"{printable(task_id)} can run now: a worker that fits is connected")

    def _limit_words(self) -> str:
        if self._unschedulable_timeout == float("inf"):
            return "as long as it takes"
        return f"up to {self._unschedulable_timeout:g}s (--unschedulable-timeout)"
