"""How fast a dead or hung worker's task runs elsewhere (issue 12, "Failure detection").

A real coordinator and two real workers on loopback (:class:`LocalFleet`),
each with one slot. Each round submits a long simulated task, waits until it
runs on one worker (the victim), then either

* ``kill -9``s the victim: its socket closes; the coordinator declares it lost
  after ``--disconnect-grace``; or
* ``SIGSTOP``s it: its socket stays open and silent; the coordinator declares
  it lost after ``--heartbeat-timeout`` (then the victim is killed),

and times, from the signal, until the task is running on the other worker.
The victim is restarted under the same id for the next round.

    .venv/bin/python benchmarks/failure_detection.py --rounds 5

Prints the settings and, per fault, the median, minimum and maximum seconds.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from testfleet.local_fleet import CoordinatorOptions, LocalFleet, WorkerOptions

WORKERS = ("fd-a", "fd-b")
#: How often the task is polled while waiting for it to move (the figures'
#: resolution).
POLL_SECONDS = 0.05


def running_on(fleet: LocalFleet, task_id: str) -> str | None:
    """The worker the task runs on now, or None (queued, assigned, restarting)."""
    task = fleet.client.get_task(task_id)["task"]
    return str(task["worker_id"]) if task["status"] == "running" else None


def one_round(fleet: LocalFleet, index: int, fault: signal.Signals, limit: float) -> float:
    """Seconds from ``fault`` on the task's worker to the task running on the other."""
    task_id = f"fd-{fault.name.lower()}-{index}"
    fleet.client.submit(
        {
            "task_id": task_id,
            "type": "simulated",
            "config": {"duration_seconds": 3600},
            "timeout_seconds": 7200,
        }
    )
    victim = fleet.wait_until(lambda: running_on(fleet, task_id), 60, f"{task_id} to run")
    started = time.monotonic()
    fleet.send_signal(victim, fault)

    def moved() -> bool:
        worker = running_on(fleet, task_id)
        return worker is not None and worker != victim

    fleet.wait_until(moved, limit, f"{task_id} to run elsewhere", poll=POLL_SECONDS)
    elapsed = time.monotonic() - started
    if fault is not signal.SIGKILL:
        fleet.send_signal(victim, signal.SIGKILL)
    fleet.client.cancel(task_id)
    fleet.start_worker(victim)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per fault (default 5)")
    parser.add_argument(
        "--heartbeat-interval", type=float, default=None, help="coordinator default if unset"
    )
    parser.add_argument(
        "--heartbeat-timeout", type=float, default=None, help="coordinator default if unset"
    )
    parser.add_argument(
        "--disconnect-grace", type=float, default=None, help="coordinator default if unset"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    extra: list[str] = []
    if args.disconnect_grace is not None:
        extra += ["--disconnect-grace", str(args.disconnect_grace)]
    options = CoordinatorOptions(
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        extra_args=extra,
    )
    from testfleet.coordinator.settings import CoordinatorSettings

    defaults = CoordinatorSettings()
    timeout = args.heartbeat_timeout or defaults.heartbeat_timeout_seconds
    settings = (
        f"heartbeat interval {args.heartbeat_interval or defaults.heartbeat_interval_seconds:g} s, "
        f"heartbeat timeout {timeout:g} s, "
        f"disconnect grace {args.disconnect_grace or defaults.disconnect_grace_seconds:g} s"
    )
    figures: dict[str, list[float]] = {"kill -9": [], "SIGSTOP": []}
    with tempfile.TemporaryDirectory() as root, LocalFleet(Path(root)) as fleet:
        fleet.start_coordinator(options)
        for worker_id in WORKERS:
            fleet.start_worker(worker_id, WorkerOptions(slots=1), wait=False)
        fleet.wait_for_workers(list(WORKERS))
        for index in range(args.rounds):
            for name, fault in (("kill -9", signal.SIGKILL), ("SIGSTOP", signal.SIGSTOP)):
                seconds = one_round(fleet, index, fault, limit=timeout * 4 + 30)
                figures[name].append(seconds)
                print(f"round {index + 1} {name}: {seconds:.2f} s", file=sys.stderr, flush=True)
        fleet.stop_all()
    print(f"failure detection, {args.rounds} rounds each; {settings}")
    print(f"{'fault':<10} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, values in figures.items():
        print(
            f"{name:<10} {statistics.median(values):>9.2f} {min(values):>7.2f} {max(values):>7.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
