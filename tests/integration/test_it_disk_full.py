"""A disk that fills under a running coordinator's DuckDB file, and is then freed.

The file lives on a small tmpfs of its own (mounting one needs root, as the
test machines and CI run; elsewhere the test is skipped), filled with a ballast
file until the OS says ENOSPC. The coordinator must refuse requests with 503
and the reason, answer nothing it did not commit, keep everything it had
acknowledged, and take work again by itself once the ballast is deleted: no
restart.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testfleet.client import FleetError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Room for the database and its WAL, small enough to fill in a moment.
DISK_SIZE = "48m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the test machines and CI run as root)")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace')}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(ballast: Path) -> None:
    """Write zeros to ``ballast`` until the file system has no room left."""
    block = b"\0" * (1 << 16)
    # Unbuffered, and the suppress outside the open: a buffered file that was
    # cut short still holds the rest of its block and raises ENOSPC again when
    # it is closed (how full the disk was decided whether this test failed).
    with contextlib.suppress(OSError), ballast.open("wb", buffering=0) as out:
        while True:
            out.write(block)


def simulated(task_id: str) -> dict:
    return {"task_id": task_id, "type": "simulated", "config": {"duration_seconds": 0.05}}


#: The submission held while the disk is full (see the test).
HELD = [f"disk-held-{n:03d}" for n in range(300)]


def health(fleet) -> dict:
    with fleet.http() as http:
        return http.get("/api/v1/health").json()


@pytest.mark.timeout(240)
def test_a_full_disk_refuses_with_503_and_resumes_on_its_own_when_freed(fleet, small_disk):
    fleet.db = small_disk / "fleet.duckdb"
    fleet.start_coordinator()
    fleet.start_worker("disk-a", slots=2)
    before = fleet.client.submit([simulated(f"disk-before-{n:02d}") for n in range(20)])
    fleet.wait_terminal(before, timeout=60)

    ballast = small_disk / "ballast"
    fill(ballast)
    with ThreadPoolExecutor(1) as pool:
        # This submission's turn cannot commit: it is held, neither accepted nor
        # refused, until the disk has room again. It is large on purpose: tmpfs
        # hands out 4 KiB pages, and a small commit can still fit in the rest of
        # the WAL's last page on a "full" disk (then the next turn, the task's
        # assignment, is the one held, and this one was rightly acknowledged).
        held = pool.submit(fleet.client.submit, [simulated(h) for h in HELD])
        status = fleet.wait_until(
            lambda: (h := health(fleet))["status"] == "degraded" and h, 30, "health: degraded"
        )
        assert "No space left on device" in status["error"]
        with pytest.raises(FleetError, match="No space left on device") as refused:
            fleet.client.submit([simulated("disk-refused")])
        assert refused.value.status == 503
        assert "free space" in str(refused.value)
        assert not held.done()

        ballast.unlink()
        assert held.result(timeout=60) == HELD
    fleet.wait_until(lambda: health(fleet)["status"] == "ok", 30, "health: ok again")
    after = fleet.client.submit([simulated(f"disk-after-{n}") for n in range(5)])
    finished = fleet.wait_terminal([*before, *HELD, *after], timeout=120)
    assert {t["status"] for t in finished.values()} == {"completed"}

    fleet.stop_all()
    with fleet.open_store() as store:
        assert store.get_task("disk-refused") is None
        for task_id in [*before, *HELD, *after]:
            task = store.get_task(task_id)
            assert task is not None
            assert task.status.value == "completed"
