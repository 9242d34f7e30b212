"""Warming the workers' pytest sessions before a run's first chunk, and which
workers take test tasks at all.

Callers: :mod:`testfleet.fleetrun.session` sends the warm-up as soon as a
run's id and arguments are known (before local collection); :class:`FleetRun`
asks :func:`workers_taking_tests` how many test slots the fleet has and waits
for the first such worker. Kept apart from the run's loop (``run.py``), which
only follows chunks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from testfleet.client import FleetError
from testfleet.domain.enums import TaskType
from testfleet.domain.pytest_tasks import TestConfig
from testfleet.fleetrun.run_types import RunClient, RunSettings

#: Answers that mean "not now" rather than "no" (0: no answer at all).
TRANSIENT_STATUSES = frozenset({0, 502, 503, 504})

#: A warm-up only starts a pytest session; longer means something is wrong.
WARM_UP_TIMEOUT_SECONDS = 300.0


def warm_up(client: RunClient, settings: RunSettings) -> list[str]:
    """Send one warm-up task (a test task without node ids) per free slot of the
    workers that take test tasks; returns their task ids.

    Called as soon as the run's id, project and arguments are known, before
    local collection: each worker then starts the run's pytest session (its
    configuration, plugins and conftest files) while this machine collects, and
    the run's first chunk there finds the session ready.

    The warm-up only saves time: a coordinator that answers "not now" (502-504:
    restarting, shutting down, its disk full) gets none, and the run then waits
    it out (:meth:`FleetRun._through_outages`). No answer at all still raises,
    so a wrong address fails at once.
    """
    try:
        return _warm_up(client, settings)
    except FleetError as exc:
        if exc.status in TRANSIENT_STATUSES - {0}:
            return []
        raise


def _warm_up(client: RunClient, settings: RunSettings) -> list[str]:
    if settings.resources is not None and settings.resources.declared:
        # A chunk held to resources starts a session of its own with its
        # limits: a session warmed without them would serve no chunk.
        return []
    slots = sum(
        max(0, int(w.get("slots", 1)) - int(w.get("running", 0)))
        for w in workers_taking_tests(client.workers())
    )
    config = TestConfig(
        run_id=settings.run_id,
        project=settings.project,
        args=settings.args,
        python=settings.python,
        full_collection=settings.full_collection,
        plugins=settings.plugins,
    ).model_dump(mode="json", exclude_defaults=True)
    documents = [
        {
            "task_id": f"{settings.run_id}.warm.{index:04d}",
            "type": TaskType.TEST.value,
            "config": config,
            "timeout_seconds": WARM_UP_TIMEOUT_SECONDS,
        }
        for index in range(slots)
    ]
    return client.submit(documents) if documents else []


def workers_taking_tests(workers: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workers (as ``GET /api/v1/workers`` lists them) that can take a chunk now:
    connected, not draining, and offering ``test`` tasks."""
    return [
        w
        for w in workers
        if w.get("connected")
        and not w.get("draining")
        and TaskType.TEST.value in w.get("task_types", ())
    ]
