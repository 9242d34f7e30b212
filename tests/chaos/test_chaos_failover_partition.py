"""A worker partitioned from the PostgreSQL fleet while its leader dies (issue 13).

The worker runs in a network namespace of its own (``chaos_netns.py``) and
reaches each coordinator through a forwarder inside the namespace on the
coordinator's own ``127.0.0.1:PORT`` (so the leader's URL a standby names
works there too) and a proxy here on the veth's host address, as the chaos
harness does. Taking the veth down cuts it off with no FIN or RST. While it
is cut off the leader is killed and a standby takes over; the link comes
back, the worker finds the new leader, and every task ends with exactly one
counted outcome (its late results recorded, not counted twice).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos_fleet import PROXY_SCRIPT
from chaos_netns import Namespace, create, delete, set_link
from chaos_proxy import ThreadedProxy

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from ha_fleet import HaFleet, simulated

pytestmark = pytest.mark.slow


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    made = create(7)
    try:
        yield made
    finally:
        delete(made)


def counted(fleet: HaFleet, worker: str) -> int:
    rows = fleet.sql("SELECT count(*) FROM task_results WHERE counted AND worker_id = %s", worker)
    return int(rows[0][0])


def test_a_partitioned_worker_rejoins_the_new_leader_and_its_work_counts_once(
    tmp_path: Path, pg_dsn: str, namespace: Namespace
) -> None:
    fleet = HaFleet(tmp_path, pg_dsn)
    proxies: list[ThreadedProxy] = []
    try:
        for name in ("c1", "c2"):
            fleet.start_coordinator(name)
        fleet.wait_leader()
        for name in fleet.coordinators:
            port = fleet.ports[name]
            proxy = ThreadedProxy((namespace.host_address, 0), ("127.0.0.1", port))
            proxies.append(proxy)
            fleet.start_process(
                f"forward-{name}",
                [
                    sys.executable,
                    str(PROXY_SCRIPT),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--target",
                    f"{namespace.host_address}:{proxy.port}",
                ],
                prefix=namespace.exec_prefix,
            )
        fleet.start_worker("inside", slots=4, prefix=namespace.exec_prefix)
        fleet.start_worker("outside", slots=4)
        task_ids = fleet.submit(simulated(300, seconds=0.2))
        fleet.wait_until(lambda: counted(fleet, "inside") >= 10, 120, "the inside worker's work")
        set_link(namespace, up=False)
        leader = fleet.wait_leader()[0]
        fleet.kill(leader)
        fleet.wait_leader([name for name in fleet.coordinators if name != leader])
        fleet.start_coordinator(leader)  # back, as a standby
        before = counted(fleet, "inside")
        set_link(namespace, up=True)
        fleet.wait_terminal(task_ids, timeout=300)
        counts = fleet.counted_outcomes(task_ids)
        assert {task_id: n for task_id, n in counts.items() if n != 1} == {}
        # It rejoined: results of its reached the new leader after the partition.
        fleet.wait_until(
            lambda: counted(fleet, "inside") > before or None, 120, "the rejoined worker's work"
        )
    finally:
        fleet.close()
        for proxy in proxies:
            proxy.close()
