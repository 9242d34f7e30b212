"""Coordinator settings, with the defaults a real fleet wants."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    """Tunables the CLI exposes; tests shrink the times to keep runs short."""

    #: How often workers send a heartbeat.
    heartbeat_interval_seconds: float = 2.0
    #: A worker silent this long is declared lost and its attempts are requeued.
    #: It is also how long a disconnected worker has to reconnect and keep its work.
    heartbeat_timeout_seconds: float = 15.0
    #: The coordinator's own deadline is the task's timeout plus this grace (the
    #: worker enforces the timeout itself; this catches a worker that cannot).
    timeout_grace_seconds: float = 30.0
    #: Attempts ended by a lost worker are retried beyond ``max_retries`` up to this many.
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
