"""Holding a task to its declared resources on the worker: memory, CPU cores, disk.

Callers: the worker CLI builds one :class:`ResourceLimiter` per worker
(:meth:`ResourceLimiter.detect`, from the machine and the operator's caps) and
advertises :meth:`ResourceLimiter.advertised` in its capabilities; the agent
hands it to executors in ``ExecutionContext.limiter``; the command and
benchmark executors call :func:`begin_limits` per attempt and use the
:class:`AttemptLimits` it returns: ``cwd`` and ``preexec`` for the child,
``start_disk_watch`` beside it, ``verdict`` on its exit and ``close`` at the
end. The test executor does the same for a limited chunk: ``preexec`` starts
the chunk's own pytest session, ``verdict`` judges a session that died and
``output_verdict`` each failed test (see ``worker/executors/pytest_limits.py``);
its work directory is not scanned (``RLIMIT_FSIZE`` still bounds each file).

Decisions:

* **Memory**: ``RLIMIT_DATA`` on Linux (heap and private writable mappings,
  so a runtime that only *reserves* address space, as Go and CUDA do, is not
  refused; ``RLIMIT_AS`` elsewhere) on every process of the task, and, where
  the machine lets this worker write a memory cgroup (v1 under
  ``/sys/fs/cgroup/memory``, or v2 with the ``memory`` controller), one cgroup
  per attempt holding the task's processes *together* to the limit. Which one
  is used is decided once at start, logged, and advertised
  (``capabilities.resources.memory_enforcement``). A task over the limit ends
  ``out_of_memory``: the cgroup's OOM-kill counter moved, or, with the rlimit,
  the process failed with an allocation error (``MemoryError``, ``Cannot
  allocate memory``, ``std::bad_alloc``) in the end of its output.
* **CPU cores**: the worker allots whole cores from its own affinity set and
  pins the child to them (``sched_setaffinity``, inherited by what it starts);
  two running attempts never share an allotted core while enough are free.
  Pinning slows a task down, it never kills it.
* **Disk**: the attempt runs in a directory of its own (its cwd when the task
  names none), whose size is scanned every ``disk_scan_seconds`` with a
  bounded number of entries per scan; over the limit, the task is ended and
  reported ``resource_limit``. ``RLIMIT_FSIZE`` bounds any single file it
  writes anywhere (a write past it fails with ``File too large`` or SIGXFSZ):
  also ``resource_limit``. The directory is removed when the attempt ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from testfleet.domain.enums import ErrorClass
from testfleet.domain.resources import (
    MemoryEnforcement,
    TaskResources,
    WorkerResources,
    format_size,
)
from testfleet.worker.executors.process_group import signal_group
from testfleet.worker.executors.stale_cgroups import end_members, remove_stale_groups

log = logging.getLogger(__name__)

CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")
DEFAULT_DISK_SCAN_SECONDS = 1.0
#: How long ending an attempt's cgroup members may take before it gives up.
STRAY_WAIT_SECONDS = 5.0
#: At most this many directory entries per disk scan: a task with millions
#: of files costs the worker a bounded amount per scan (the size counted is
#: then a lower bound, which still catches a flood of bytes).
MAX_SCAN_ENTRIES = 20_000
#: What an allocation failure looks like at the end of a process's output.
_ALLOCATION_FAILURES = (b"MemoryError", b"Cannot allocate memory", b"std::bad_alloc")
_FILE_TOO_LARGE = b"File too large"
_MEMORY_RLIMIT = resource.RLIMIT_DATA if sys.platform == "linux" else resource.RLIMIT_AS
_MEMORY_RLIMIT_NAME = "RLIMIT_DATA" if sys.platform == "linux" else "RLIMIT_AS"


# ----------------------------------------------------------------------------- cgroups


@dataclass(frozen=True, slots=True)
class CgroupRoot:
    """A memory cgroup directory this worker may make per-attempt children under."""

    path: Path
    version: MemoryEnforcement

    @property
    def limit_file(self) -> str:
        return (
            "memory.limit_in_bytes" if self.version is MemoryEnforcement.CGROUP_V1 else "memory.max"
        )

    def oom_kills(self, group: Path) -> int:
        """How many processes of ``group`` the kernel killed for its limit (0 if unknown)."""
        name = (
            "memory.oom_control" if self.version is MemoryEnforcement.CGROUP_V1 else "memory.events"
        )
        try:
            text = (group / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0


def find_cgroup_root(
    v1: Path = CGROUP_V1_MEMORY, v2: Path = CGROUP_V2, name: str | None = None
) -> CgroupRoot | None:
    """A writable memory cgroup for this worker's attempts, or None (rlimits only).

    Tried by making (and removing) a probe child group: being root is not
    enough where ``/sys/fs/cgroup`` is mounted read-only.
    """
    name = name or f"testfleet-{os.getpid()}"
    candidates: list[tuple[Path, MemoryEnforcement]] = []
    if (v1 / "memory.limit_in_bytes").exists():
        candidates.append((v1 / name, MemoryEnforcement.CGROUP_V1))
    controllers = v2 / "cgroup.controllers"
    with contextlib.suppress(OSError):
        if controllers.exists() and "memory" in controllers.read_text().split():
            candidates.append((_own_v2_group(v2) / name, MemoryEnforcement.CGROUP_V2))
    for path, version in candidates:
        remove_stale_groups(path.parent)
        try:
            path.mkdir(exist_ok=True)
            probe = path / "probe"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        except OSError:
            continue
        root = CgroupRoot(path, version)
        if version is MemoryEnforcement.CGROUP_V2:
            # Children get the memory controller only if their parent delegates it.
            try:
                (path / "cgroup.subtree_control").write_text("+memory")
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
        return root
    return None


def _own_v2_group(v2: Path) -> Path:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return v2 / line[3:].lstrip("/")
    return v2


# ----------------------------------------------------------------------------- per worker


@dataclass(slots=True)
class ResourceLimiter:
    """One per worker: its allocatable totals, its free cores, its cgroup root."""

    totals: WorkerResources
    #: Cores attempts may be pinned to (this worker's own affinity, capped).
    cores: tuple[int, ...]
    cgroup: CgroupRoot | None = None
    disk_scan_seconds: float = DEFAULT_DISK_SCAN_SECONDS
    _busy: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def detect(
        cls,
        work_dir: Path,
        *,
        max_task_memory: int | None = None,
        cpu_cores: int | None = None,
        disk: int | None = None,
        use_cgroups: bool = True,
    ) -> ResourceLimiter:
        """The machine's memory, this process's cores and the work directory's free
        disk, each capped by the operator's option where given (cores never above
        what the worker itself may use)."""
        own = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        own = own or list(range(os.cpu_count() or 1))
        cores = tuple(own[: cpu_cores or len(own)])
        memory = max_task_memory or psutil.virtual_memory().total
        if disk is None:
            work_dir.mkdir(parents=True, exist_ok=True)
            disk = shutil.disk_usage(work_dir).free
        cgroup = find_cgroup_root() if use_cgroups else None
        enforcement = cgroup.version if cgroup is not None else MemoryEnforcement.RLIMIT
        totals = WorkerResources(
            memory_bytes=memory,
            cpu_cores=len(cores),
            disk_bytes=disk,
            memory_enforcement=enforcement,
        )
        where = f" ({cgroup.path})" if cgroup is not None else ""
        log.info(
            "resource limits: %s memory, %d cores, %s disk for tasks; memory enforced by %s%s",
            format_size(memory),
            len(cores),
            format_size(disk),
            enforcement.value,
            where,
        )
        return cls(totals=totals, cores=cores, cgroup=cgroup)

    def advertised(self) -> WorkerResources:
        return self.totals

    def begin(self, attempt_id: int, wanted: TaskResources, work_dir: Path) -> AttemptLimits:
        """Allot cores and make the cgroup and directory for one attempt.

        Cores: the lowest-numbered free ones; if the coordinator placed more
        than are free (it should not: it reserves them), the least used ones,
        so the task is still held to its count.
        """
        cores: tuple[int, ...] = ()
        if wanted.cpu_cores:
            busy = {c for allotted in self._busy.values() for c in allotted}
            ordered = [c for c in self.cores if c not in busy] + [
                c for c in self.cores if c in busy
            ]
            cores = tuple(sorted(ordered[: wanted.cpu_cores]))
            self._busy[attempt_id] = cores
        group: Path | None = None
        if self.cgroup is not None:
            # Every attempt gets a group, limit or not: membership is how the
            # attempt's processes are found at its end, whatever they did to
            # their process group and environment (end_strays).
            group = self.cgroup.path / f"attempt-{attempt_id}"
            try:
                group.mkdir(exist_ok=True)
                if wanted.memory_bytes:
                    (group / self.cgroup.limit_file).write_text(str(wanted.memory_bytes))
                if wanted.memory_bytes and self.cgroup.version is MemoryEnforcement.CGROUP_V1:
                    # With swap the group would page instead of being held.
                    with contextlib.suppress(OSError):
                        (group / "memory.memsw.limit_in_bytes").write_text(str(wanted.memory_bytes))
            except OSError as exc:
                log.warning("attempt %d: no memory cgroup (%s); rlimit only", attempt_id, exc)
                with contextlib.suppress(OSError):
                    group.rmdir()
                group = None
        directory = work_dir / "attempts" / str(attempt_id) if wanted.disk_bytes else None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        return AttemptLimits(
            limiter=self,
            attempt_id=attempt_id,
            wanted=wanted,
            cores=cores,
            group=group,
            directory=directory,
        )

    def _end(self, attempt_id: int) -> None:
        self._busy.pop(attempt_id, None)

    def close(self) -> None:
        """Remove this worker's cgroup directory (the worker CLI, at exit). Never raises."""
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.path.rmdir()


# ----------------------------------------------------------------------------- per attempt


def begin_limits(
    limiter: ResourceLimiter | None,
    attempt_id: int,
    wanted: TaskResources,
    work_dir: Path,
    *,
    track: bool = True,
) -> tuple[AttemptLimits | None, tuple[ErrorClass, str] | None]:
    """The attempt's limits, or None when there is nothing to hold it to; or why not.

    Called by every executor that starts a child for one attempt (command,
    benchmark, test) before starting it, so they begin, log and fail alike: a
    cgroup or directory that cannot be made is the worker's fault
    (``infrastructure``), never the task's. With ``track`` (command and
    benchmark) an attempt that declares nothing still gets its cgroup where
    the worker has one, for :meth:`AttemptLimits.end_strays`; the test
    executor passes False (its undeclared chunks share a warm session).
    """
    if limiter is None:
        return None, None
    if not wanted.amounts() and not (track and limiter.cgroup is not None):
        return None, None
    try:
        limits = limiter.begin(attempt_id, wanted, work_dir)
    except OSError as exc:
        return None, (ErrorClass.INFRASTRUCTURE, f"cannot apply its limits: {exc}")
    if wanted.amounts():
        log.info("attempt %d held to %s", attempt_id, describe(wanted, limits.cores))
    return limits, None


@dataclass(slots=True)
class AttemptLimits:
    """One attempt's limits: applied in its child, watched while it runs, judged at its end."""

    limiter: ResourceLimiter
    attempt_id: int
    wanted: TaskResources
    cores: tuple[int, ...] = ()
    group: Path | None = None
    #: The attempt's own directory (only when it has a disk limit).
    directory: Path | None = None
    #: Set by :meth:`watch_disk` when it ended the task: the message.
    disk_exceeded: str | None = None

    def preexec(self) -> None:
        """Run in the child between fork and exec (``preexec_fn``): nothing here may
        allocate much or take a lock, so it only makes system calls."""
        if self.group is not None:
            with open(self.group / "cgroup.procs", "w") as procs:
                procs.write(str(os.getpid()))
        memory = self.wanted.memory_bytes
        if memory:
            resource.setrlimit(_MEMORY_RLIMIT, (memory, memory))
        disk = self.wanted.disk_bytes
        if disk:
            resource.setrlimit(resource.RLIMIT_FSIZE, (disk, disk))
        if self.cores:
            os.sched_setaffinity(0, self.cores)

    def cwd(self, configured: Path) -> Path:
        """Where the command runs: the attempt's own directory when it has a disk limit
        and the task named no cwd (``configured`` is then the shared work dir)."""
        return self.directory if self.directory is not None else configured

    async def watch_disk(self, end: Callable[[], None]) -> None:
        """Until cancelled: scan the attempt's directory; past the limit, call ``end``
        (which kills the task) once and remember why."""
        directory, limit = self.directory, self.wanted.disk_bytes
        if directory is None or not limit:
            return
        while True:
            await asyncio.sleep(self.limiter.disk_scan_seconds)
            used = await asyncio.to_thread(directory_size, directory)
            if used > limit:
                self.disk_exceeded = (
                    f"work directory passed its disk limit of {format_size(limit)} "
                    f"({format_size(used)} used); task ended"
                )
                end()
                return

    def start_disk_watch(self, pgid: int) -> asyncio.Task[None]:
        """Run :meth:`watch_disk` beside the child whose process group is ``pgid``;
        the caller cancels the task once the child has ended.

        Past the limit the group is killed outright (it is over a limit, not
        being asked to stop); the exit is then judged by :meth:`verdict`,
        which knows why.
        """

        def end() -> None:
            signal_group(pgid, signal.SIGKILL)

        return asyncio.create_task(self.watch_disk(end))

    def verdict(self, returncode: int | None, tail: bytes) -> tuple[ErrorClass, str] | None:
        """Whether the attempt ended because of one of its limits, and which.

        Called once the child has exited and before :meth:`close`; None means
        "judge it as any other ending" (a success stays a success).
        """
        if self.disk_exceeded is not None:
            return ErrorClass.RESOURCE_LIMIT, self.disk_exceeded
        if returncode == 0:
            return None
        memory = self.wanted.memory_bytes
        root = self.limiter.cgroup
        group = self.group
        if memory and group is not None and root is not None and root.oom_kills(group) > 0:
            return (
                ErrorClass.OUT_OF_MEMORY,
                f"killed for passing its memory limit of {format_size(memory)} "
                f"({root.version.value})",
            )
        disk = self.wanted.disk_bytes
        if disk and returncode == -signal.SIGXFSZ:
            return self.output_verdict(_FILE_TOO_LARGE)
        return self.output_verdict(tail)

    def output_verdict(self, text: bytes) -> tuple[ErrorClass, str] | None:
        """Whether ``text`` (the end of a process's output, or a failed test's
        report) shows an allocation or a write that failed at one of the limits.

        Called by :meth:`verdict`, and by the test executor on each failed test
        of a limited chunk: a test whose allocation failed at the rlimit fails
        as a test (``MemoryError``) while its session lives on.
        """
        memory = self.wanted.memory_bytes
        if memory and any(marker in text for marker in _ALLOCATION_FAILURES):
            return (
                ErrorClass.OUT_OF_MEMORY,
                f"an allocation failed at its memory limit of {format_size(memory)} "
                f"({_MEMORY_RLIMIT_NAME})",
            )
        disk = self.wanted.disk_bytes
        if disk and _FILE_TOO_LARGE in text:
            return (
                ErrorClass.RESOURCE_LIMIT,
                f"a file passed its disk limit of {format_size(disk)} (RLIMIT_FSIZE)",
            )
        return None

    def memory_note(self) -> str | None:
        """What held the attempt's memory (``memory limit of 64 MiB (RLIMIT_DATA)``), or
        None without a memory limit. The benchmark executor adds it to the
        out-of-memory errors its runner caught and reported itself (a sweep's
        batch size), which no exit status can attribute to the limit."""
        memory = self.wanted.memory_bytes
        if not memory:
            return None
        root = self.limiter.cgroup
        how = _MEMORY_RLIMIT_NAME
        if self.group is not None and root is not None:
            how = f"{root.version.value}, {how}"
        return f"memory limit of {format_size(memory)} ({how})"

    def end_strays(self, wait_seconds: float = STRAY_WAIT_SECONDS) -> int:
        """SIGKILL what is still in the attempt's cgroup; how many processes.

        Called by the command and benchmark executors once the attempt's process
        group and its marked processes are ended (blocking: from a thread): a
        process that left the group *and* cleared its environment (``setsid``,
        ``env -i``, a double fork) is still a member of the cgroup.
        """
        if self.group is None:
            return 0
        return end_members(self.group, wait_seconds)

    def close(self) -> None:
        """Free the cores, remove the cgroup and the attempt's directory. Never raises."""
        self.limiter._end(self.attempt_id)
        if self.group is not None:
            with contextlib.suppress(OSError):
                # A group with members cannot be removed; normally it is empty.
                end_members(self.group, STRAY_WAIT_SECONDS)
                self.group.rmdir()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def directory_size(root: Path, max_entries: int = MAX_SCAN_ENTRIES) -> int:
    """Bytes in files under ``root`` (symlinks not followed), looking at no more than
    ``max_entries`` entries: past that the figure is a lower bound."""
    total = 0
    seen = 0
    stack = [root]
    while stack and seen < max_entries:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                seen += 1
                if seen > max_entries:
                    break
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        # Allocated blocks, not the apparent size: a sparse file costs nothing.
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    continue
    return total


def describe(resources: TaskResources, cores: Sequence[int]) -> str:
    """One line for the worker's log about what an attempt is held to."""
    parts = []
    if resources.memory_bytes:
        parts.append(f"memory {format_size(resources.memory_bytes)}")
    if cores:
        parts.append(f"cores {','.join(map(str, cores))}")
    if resources.disk_bytes:
        parts.append(f"disk {format_size(resources.disk_bytes)}")
    return ", ".join(parts)
