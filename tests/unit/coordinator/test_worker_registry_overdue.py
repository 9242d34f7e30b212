"""``WorkerRegistry.overdue`` looks only at workers whose filed deadline has come,
and must still say exactly what a scan of every worker says.

The registry files each worker's earliest possible deadline in a heap (a scan
of every worker on every tick was O(workers) per second). Random sequences of
hellos, heartbeats, closed sockets, losses, revocations and restarts, with
time jumping by random amounts, must give the same workers, reasons and order
as the plain rule applied to every worker.
"""

from __future__ import annotations

import random

import pytest
from test_worker_registry_views import hello, random_step

from testfleet.coordinator.workers import OPEN_WORKER_STATUSES, LiveWorker, WorkerRegistry


def scan(
    registry: WorkerRegistry, now: float, timeout: float, grace: float
) -> list[tuple[LiveWorker, str]]:
    """The rule, applied to every worker in order (what overdue() did before the heap)."""
    due = []
    for w in registry.workers.values():
        if w.record.status not in OPEN_WORKER_STATUSES:
            continue
        if w.closed_at is not None and now - w.closed_at >= grace:
            due.append((w, f"its connection closed {now - w.closed_at:.1f} s ago"))
        elif now - w.record.last_heartbeat > timeout:
            due.append((w, f"no heartbeat for {now - w.record.last_heartbeat:.1f} s"))
    return due


@pytest.mark.parametrize("seed", range(40))
def test_overdue_says_what_a_scan_of_every_worker_says(seed: int) -> None:
    rng = random.Random(seed)
    registry = WorkerRegistry()
    state = {"now": 0, "connection": 0, "attempt": 0}
    timeout, grace = 30.0, 5.0
    for step in range(300):
        action = random_step(registry, rng, state)
        # Time moves on by whole and odd amounts, sometimes far.
        state["now"] += rng.choice([0, 0, 1, 2, 5, 29, 31])
        now = float(state["now"]) + rng.choice([0.0, 0.5, 1e-9])
        for worker in registry.workers.values():
            if worker.connected and rng.random() < 0.3:
                worker.record.last_heartbeat = now  # a frame (CoordinatorState._frame)
        if rng.random() < 0.05:
            timeout, grace = rng.choice([(30.0, 5.0), (10.0, 10.0), (60.0, 1.0)])
        if rng.random() < 0.4:
            expected = scan(registry, now, timeout, grace)
            got = registry.overdue(now, timeout, grace)
            assert [(w.record.worker_id, why) for w, why in got] == [
                (w.record.worker_id, why) for w, why in expected
            ], f"seed {seed}, step {step}, after {action}"
            # The state loses most workers it is told about, not always all.
            for worker, _ in got:
                if rng.random() < 0.8:
                    registry.mark_lost(worker)


def test_a_restart_files_every_recovered_worker() -> None:
    rng = random.Random(3)
    registry = WorkerRegistry()
    for n in range(3):
        registry.admit(n + 1, hello(f"w{n}", rng, "a"), 0.0)
    assert registry.overdue(10.0, 30.0, 5.0) == []
    restarted = WorkerRegistry()
    restarted.recover([w.record for w in registry.workers.values()], 100.0)
    assert restarted.overdue(120.0, 30.0, 5.0) == []
    restarted.admit(9, hello("w1", rng, "a"), 125.0)
    lost = restarted.overdue(131.0, 30.0, 5.0)
    assert [(w.record.worker_id, why) for w, why in lost] == [
        ("w0", "no heartbeat for 31.0 s"),
        ("w2", "no heartbeat for 31.0 s"),
    ]
