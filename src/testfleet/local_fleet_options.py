"""How :class:`~testfleet.local_fleet.LocalFleet` starts each of its processes.

Callers: whoever starts a local fleet's coordinator or workers (the demo, the
integration tests, the benchmarks), through ``LocalFleet.start_coordinator``
and ``LocalFleet.start_worker``; kept apart so the fleet module holds only
the fleet. ``None`` in a field leaves the command's own default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testfleet.domain.enums import Codec
from testfleet.worker.transports import Transport


@dataclass(frozen=True)
class CoordinatorOptions:
    """How to start the coordinator; ``None`` leaves the command's own default."""

    heartbeat_interval: float | None = None
    heartbeat_timeout: float | None = None
    log_level: str | None = None
    extra_args: Sequence[str] = ()
    #: Added to the fleet's environment for this process.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Words before the interpreter, e.g. ``("taskset", "-c", "0")``.
    prefix: Sequence[str] = ()


@dataclass(frozen=True)
class WorkerOptions:
    """How to start one worker; ``None`` leaves the command's own default."""

    slots: int = 1
    tags: Mapping[str, str] = field(default_factory=dict)
    codec: Codec | None = None
    #: Off unless asked for: importing torch costs seconds per worker, and
    #: only model benchmarks (whose hardware torch reports) need it.
    probe_torch: bool = False
    #: Off unless asked for: the browser probe starts a Chromium per worker.
    probe_backends: bool = False
    #: ``None``: ``<the fleet's work_dir>/<worker_id>``.
    work_dir: Path | None = None
    log_level: str | None = None
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    prefix: Sequence[str] = ()
    #: gRPC needs a fleet made with ``grpc=True`` (its coordinator's ``--grpc-port``).
    transport: Transport = Transport.WEBSOCKET
