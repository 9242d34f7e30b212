"""Coordinator settings, with the defaults a real fleet wants."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testfleet.scheduling.policies import PolicyName


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    """Tunables the CLI exposes; tests shrink the times to keep runs short."""

    #: How often workers send a heartbeat.
    heartbeat_interval_seconds: float = 2.0
    #: A worker silent this long (socket open, no frames: hung or partitioned)
    #: is declared lost and its attempts are requeued. Workers known only from
    #: the store after a restart get this long to reconnect and keep their work.
    heartbeat_timeout_seconds: float = 15.0
    #: A worker whose socket *closed* (its process died, or the network cut the
    #: connection) is declared lost this long after the close unless the same
    #: process reconnects first (``coordinator/workers.py``). Short, because a
    #: closed socket is strong evidence, unlike silence; long enough for a
    #: worker's first reconnect tries (0.25 s backoff base) after a blip.
    disconnect_grace_seconds: float = 3.0
    #: The coordinator's own deadline is the task's timeout plus this grace (the
    #: worker enforces the timeout itself; this catches a worker that cannot).
    timeout_grace_seconds: float = 30.0
    #: Attempts ended by a lost worker are retried beyond ``max_retries`` up to this many;
    #: one more lost attempt fails the task as ``lost_too_often`` (a poison task).
    max_lost_attempts: int = 3
    #: Waiting this long lowers a task's effective priority number by one.
    aging_seconds: float = 60.0
    #: How often the loop checks timers.
    tick_seconds: float = 0.25
    #: Requests larger than this are refused with 413 before they are parsed.
    max_request_bytes: int = 16 * 1024 * 1024
    #: At most this many tasks in one submission.
    max_tasks_per_submit: int = 50_000
    #: DuckDB worker threads for the coordinator's database (see Store).
    db_threads: int | None = 1
    # Limits (README "Limits"). Each default leaves room for the heaviest real
    # use measured so far: benchmarks/dispatch.py submits 10,000 tasks in 10
    # requests and polls a few times a second, and a CLI user sends a handful
    # of requests per command; a runaway script or a flood is what they stop.
    #: Requests per second one client may keep up (0: no rate limit).
    rate_limit_per_second: float = 20.0
    #: Requests one client may send at once before the rate applies.
    rate_limit_burst: int = 100
    #: A connection must finish a request's headers within this many seconds of
    #: opening (or of its previous response), or it is answered 408 and closed:
    #: uvicorn alone lets a client that trickles bytes hold a connection forever.
    header_timeout_seconds: float = 10.0
    #: Open REST connections beyond this are answered 503 (``/api/v1/health``
    #: still answers). Worker channels are not counted: they have their own cap.
    max_http_connections: int = 1_000
    #: Connected workers beyond this are refused (``too_many_workers``); the
    #: worker retries later. Each costs a socket and a little memory.
    max_workers: int = 10_000
    #: Frames per second one worker may send (burst of one second's worth). A
    #: worker sends a few frames per task; 1,000/s is far past zero-work tasks
    #: on many slots, while a flood is cut off (``too_many_frames``).
    max_worker_frames_per_second: float = 1_000.0
    #: Unfinished tasks (queued, assigned or running) one API token may have at
    #: once; a submission that would go past it is refused whole (429
    #: ``quota_exceeded``). 0: no limit.
    max_queued_per_submitter: int = 0
    #: ``--insecure``: the operator accepts plain HTTP beyond loopback (start-up
    #: then refuses nothing, and warns; see ``coordinator/exposure.py``), and
    #: the worker channel accepts worker tokens over plain HTTP from any peer,
    #: not only from loopback.
    insecure: bool = False
    #: ``--public-url``: where people reach this coordinator (checked by
    #: ``coordinator/public_url.py``); alert notifications link to its
    #: dashboard. Empty: derived from the bind address when it starts.
    public_url: str = ""
    #: ``--backup-dir``: where scheduled backups go, and where the backup route
    #: writes its snapshot before sending it (None: a private temporary directory,
    #: and no scheduled backups).
    backup_dir: Path | None = None
    #: ``--backup-every``: seconds between scheduled backups (0: none).
    backup_every_seconds: float = 0.0
    #: ``--backup-keep``: scheduled backups kept, newest first; older ones are deleted.
    backup_keep: int = 24
    #: Speculative copies of stragglers (``coordinator/speculation.py``): an
    #: idempotent attempt running longer than ``max(estimate * factor, estimate +
    #: min_seconds)`` gets a copy on an idle worker that no queued task could use.
    speculation_enabled: bool = True
    speculation_factor: float = 2.0
    speculation_min_seconds: float = 30.0
    #: ``--scheduling-policy``: how queued tasks are placed each turn
    #: (``scheduling/policies.py``): best fit by capability, or by estimated
    #: finish from measured worker speeds and past durations.
    scheduling_policy: PolicyName = PolicyName.BEST_FIT
