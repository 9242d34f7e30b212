"""Issue 12, per-task resource limits, with real processes on loopback: a worker capped
with --max-task-memory/--cpu-cores advertises it, a task past its memory limit ends
out_of_memory while its neighbour completes and the worker stays, and a task bigger
than the worker is unschedulable with the resource named."""

from __future__ import annotations

import sys

import pytest

from testfleet.local_fleet import WorkerOptions

pytestmark = [pytest.mark.integration]

GIB = 1024**3


def command(task_id: str, code: str, **resources: object) -> dict[str, object]:
    return {
        "task_id": task_id,
        "type": "command",
        "timeout_seconds": 60,
        "config": {"argv": [sys.executable, "-c", code]},
        "requirements": {"resources": resources},
    }


@pytest.mark.timeout(120)
def test_limits_are_advertised_enforced_classified_and_scheduled(fleet):
    fleet.start_coordinator()
    options = WorkerOptions(
        slots=2, log_level="info", extra_args=("--max-task-memory", "1GiB", "--cpu-cores", "1")
    )
    worker = fleet.start_worker("capped", options)
    (advertised,) = fleet.client.workers()
    resources = advertised["capabilities"]["resources"]
    assert resources["memory_bytes"] == GIB
    assert resources["cpu_cores"] == 1
    assert resources["memory_enforcement"] in {"cgroup_v1", "cgroup_v2", "rlimit"}

    hog = "b = bytearray(512 * 1024 * 1024); print('allocated')"
    calm = "import os; print(len(os.sched_getaffinity(0)))"
    fleet.client.submit(
        [
            command("hog", hog, memory_bytes="64MiB"),
            command("calm", calm, memory_bytes="64MiB", cpu_cores=1),
            command("huge", "print(1)", memory_bytes="2GiB"),
        ]
    )
    done = fleet.wait_terminal(["hog", "calm"])
    assert done["hog"]["status"] == "failed"
    assert done["hog"]["error"]["error_class"] == "out_of_memory"
    assert "memory limit of 64 MiB" in done["hog"]["error"]["message"]
    assert done["calm"]["status"] == "completed"
    assert worker.poll() is None  # the worker is alive, not lost

    def reason_given() -> dict[str, object] | None:
        task: dict[str, object] = fleet.task("huge")["task"]
        return task if task["unschedulable_reason"] else None

    huge = fleet.wait_until(
        reason_given,
        30,
        "the 2 GiB task to be called unschedulable",
    )
    assert huge["status"] == "queued"
    assert huge["unschedulable_reason"] == (
        "resources: needs 2 GiB memory; the largest worker offers 1 GiB"
    )
    fleet.client.cancel("huge")
    # Stopped cleanly, it removes its cgroup (one killed leaves it to the next
    # worker's start-up sweep).
    assert fleet.stop(worker) == 0
