"""A small disk under the coordinator's DuckDB file, filled and freed on demand.

Used by the chaos harness (``chaos_fleet.py``) for the "disk full" fault: the
DuckDB file lives on a tmpfs of a few tens of megabytes mounted for the run
(we are root), and :meth:`SmallDisk.fill` writes a ballast file until the
disk has no space left, so the coordinator's next commit fails;
:meth:`SmallDisk.free` deletes it. Mount failures say what the suite needs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

#: The ballast is written in blocks this big, then the last bytes one block at a time.
BLOCK = 1 << 20


class DiskUnavailable(RuntimeError):
    """A tmpfs could not be mounted (not root, or a sandbox that refuses mounts)."""


class SmallDisk:
    """A tmpfs of ``size_mb`` mounted at ``path`` for the run's lifetime."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.ballast = path / "ballast"
        self.mounted = False

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise DiskUnavailable(
                f"mounting a {self.size_mb} MB tmpfs at {self.path} failed "
                f"({done.stderr.strip()}): the chaos suite's disk-full fault needs root"
            )
        self.mounted = True

    def fill(self) -> int:
        """Write the ballast until the disk is full; returns the bytes written."""
        written = 0
        block = b"\0" * BLOCK
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (BLOCK, 4096, 1):
                while True:
                    try:
                        written += os.write(fd, block[:size])
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.ballast.unlink()

    def unmount(self) -> None:
        if self.mounted:
            self.free()
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
            self.mounted = False

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize
