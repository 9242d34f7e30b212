"""A chunk of tests as the ``test`` task document the coordinator takes.

Callers: :class:`~testfleet.fleetrun.run.FleetRun` (every chunk of a pass,
reruns included) and :func:`~testfleet.fleetrun.prestart.prestart` (the
chunks started before collection), so both submit the same document for
the same chunk.
"""

from __future__ import annotations

from typing import Any

from testfleet.domain.enums import TaskType
from testfleet.domain.pytest_tasks import TestConfig
from testfleet.domain.task import MAX_TIMEOUT_SECONDS
from testfleet.fleetrun.run_types import RunSettings
from testfleet.fleetrun.split import Chunk


def chunk_document(
    task_id: str, chunk: Chunk, settings: RunSettings, *, exclude: tuple[str, ...], rerun: int
) -> dict[str, Any]:
    """The task document of ``chunk``: its node ids and the run's pytest
    arguments as the config; its hardware, the workers to avoid (a rerun's)
    and the run's declared resources as requirements; its estimated seconds,
    when the split had durations, as ``expected_seconds``."""
    config = TestConfig(
        run_id=settings.run_id,
        project=settings.project,
        args=settings.args,
        node_ids=list(chunk.node_ids),
        python=settings.python,
        rerun=rerun,
        full_collection=settings.full_collection,
        plugins=settings.plugins,
    )
    requirements: dict[str, Any] = {}
    if chunk.hardware:
        requirements["hardware"] = list(chunk.hardware)
    if exclude:
        requirements["exclude_workers"] = list(exclude)
    if settings.resources is not None and settings.resources.declared:
        requirements["resources"] = settings.resources.model_dump(exclude_none=True)
    document: dict[str, Any] = {
        "task_id": task_id,
        "type": TaskType.TEST.value,
        "requirements": requirements,
        "config": config.model_dump(mode="json", exclude_defaults=True),
        "timeout_seconds": settings.chunk_timeout_seconds,
    }
    if chunk.estimated_seconds > 0:
        # The stored durations' sum: the coordinator's straggler check
        # (coordinator/speculation.py) copies a chunk that runs far past it. A
        # suite without history (0.0) gives no hint, and the coordinator falls
        # back on past runs of the same work.
        document["expected_seconds"] = min(chunk.estimated_seconds, MAX_TIMEOUT_SECONDS)
    return document
