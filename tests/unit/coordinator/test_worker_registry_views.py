"""The registry's cached scheduler views and best-fit ranking stay what a rebuild gives.

``WorkerRegistry.views()`` and ``ranked()`` (and their uncopied forms
``live_views()`` and ``live_ranked()``, which the scheduling round reads) are
kept between turns and rebuilt only for the workers that changed (issue 14: rebuilding every view
every turn was half of a 10,000-worker simulation's time). Random sequences
of everything that changes a worker (hello, re-hello with new capabilities or
slots, attempts held and released, drain, bye, disconnect, lost, revoked)
must leave them equal to views built afresh from the live workers.
"""

from __future__ import annotations

import random

import pytest

from testfleet.coordinator.workers import LiveWorker, WorkerRegistry
from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import CpuInfo, GpuInfo, WorkerCapabilities
from testfleet.domain.resources import NO_RESOURCES, ResourceAmounts
from testfleet.protocol.messages import PROTOCOL_VERSION, Hello
from testfleet.scheduling.matching import capability_rank
from testfleet.scheduling.view import WorkerView


def capabilities(memory_gb: float, gpu_memory_gb: float | None) -> WorkerCapabilities:
    gpus = (
        []
        if gpu_memory_gb is None
        else [GpuInfo(index=0, vendor="nvidia", name="GPU", memory_gb=gpu_memory_gb)]
    )
    return WorkerCapabilities(
        hostname="host",
        os="Linux",
        python_version="3.11",
        cpu=CpuInfo(logical_cores=8),
        memory_gb=memory_gb,
        gpus=gpus,
        hardware=[HardwareKind.CPU] + ([HardwareKind.CUDA] if gpus else []),
        task_types=[TaskType.SIMULATED],
    )


# Shared objects, as a fleet of equal machines gives the scheduler; and equal
# ranks with different ids, so the worker-id tiebreak is exercised.
CAPABILITIES = [capabilities(16, None), capabilities(64, None), capabilities(64, 40)]


def hello(worker_id: str, rng: random.Random, session: str) -> Hello:
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id=worker_id,
        session_key=session * 16,
        capabilities=rng.choice(CAPABILITIES),
        slots=rng.randint(1, 3),
    )


def fresh_view(worker: LiveWorker) -> WorkerView:
    return WorkerView(
        worker_id=worker.record.worker_id,
        capabilities=worker.record.capabilities,
        free_slots=worker.free_slots,
        accepting=not (worker.draining or worker.leaving),
        reserved=worker.reserved,
    )


def check(registry: WorkerRegistry, label: str) -> None:
    expected = {w.record.worker_id: fresh_view(w) for w in registry.workers.values() if w.connected}
    views = registry.views()
    assert {v.worker_id: v for v in views} == expected, label
    assert len(views) == len(expected), label
    ranked = sorted(
        (v for v in expected.values() if v.accepting and v.free_slots > 0),
        key=lambda v: (capability_rank(v.capabilities), v.worker_id),
    )
    assert registry.ranked() == ranked, label
    assert registry.has_free_slot() == bool(ranked), label
    # The live views the coordinator's scheduling round reads are the same.
    assert list(registry.live_views()) == views, label
    assert list(registry.live_ranked()) == ranked, label


def random_step(registry: WorkerRegistry, rng: random.Random, state: dict[str, int]) -> str:
    worker_id = f"w{rng.randint(0, 7)}"
    worker = registry.workers.get(worker_id)
    action = rng.choice(
        ["hello", "hello", "hold", "hold", "release", "drain", "bye", "close", "lost", "revoke"]
    )
    now = float(state["now"])
    state["now"] += 1
    if action == "hello":
        # The same process again (a network blip, maybe new slots) or a new one.
        session = "a" if worker is None or rng.random() < 0.7 else "b"
        if worker is not None and worker.connected:
            session = worker.session_key[0]
        state["connection"] += 1
        registry.admit(state["connection"], hello(worker_id, rng, session), now)
    elif worker is None:
        return f"{action} {worker_id}: unknown"
    elif action == "hold":
        state["attempt"] += 1
        amounts = rng.choice([NO_RESOURCES, ResourceAmounts(2 * 1024**3, 1, 0)])
        worker.hold(state["attempt"], amounts)
    elif action == "release" and worker.attempts:
        worker.release(rng.choice(sorted(worker.attempts)))
    elif action == "drain":
        worker.draining = not worker.draining
    elif action == "bye":
        worker.leaving = True
    elif action == "close" and worker.connection_id is not None:
        registry.disconnect(worker.connection_id, now)
    elif action == "lost":
        registry.mark_lost(worker)
    elif action == "revoke":
        registry.revoke(worker_id, now)
    return f"{action} {worker_id}"


@pytest.mark.parametrize("seed", range(40))
def test_cached_views_and_ranking_match_a_rebuild(seed: int) -> None:
    rng = random.Random(seed)
    registry = WorkerRegistry()
    state = {"now": 0, "connection": 0, "attempt": 0}
    steps: list[str] = []
    for _ in range(120):
        steps.append(random_step(registry, rng, state))
        # Not after every step: changes pile up between turns in the coordinator.
        if rng.random() < 0.4:
            check(registry, f"seed {seed}, after {steps[-8:]}")
    check(registry, f"seed {seed}, at the end")


def test_a_turn_without_changes_rebuilds_nothing() -> None:
    rng = random.Random(1)
    registry = WorkerRegistry()
    for n in range(5):
        registry.admit(n + 1, hello(f"w{n}", rng, "a"), 0.0)
    first = registry.views()
    again = registry.views()
    # The very same view objects: nothing was rebuilt.
    assert all(a is b for a, b in zip(first, again, strict=True))
    registry.workers["w2"].hold(1, NO_RESOURCES)
    after = {v.worker_id: v for v in registry.views()}
    assert after["w2"] is not {v.worker_id: v for v in first}["w2"]
    assert all(after[v.worker_id] is v for v in first if v.worker_id != "w2")


def test_recovered_workers_are_not_candidates_until_they_say_hello() -> None:
    rng = random.Random(2)
    registry = WorkerRegistry()
    registry.admit(1, hello("w0", rng, "a"), 0.0)
    records = [registry.workers["w0"].record]
    restarted = WorkerRegistry()
    restarted.recover(records, 10.0)
    assert restarted.views() == []
    assert restarted.ranked() == []
    restarted.admit(7, hello("w0", rng, "a"), 11.0)
    check(restarted, "after the hello")
