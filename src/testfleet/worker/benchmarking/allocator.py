"""The C allocator's state in the benchmark child: freed memory is kept, not handed back.

Callers: the runner, once at its start (:func:`keep_freed_memory`), before
any model is built, on every backend's path; the run's conditions
(:func:`~testfleet.worker.benchmarking.conditions.run_conditions`) record
what it achieved (:func:`current_setting`).
``benchmarks/fidelity.py`` runs its plain reference loop under the same
setting through glibc's environment variables (:data:`GLIBC_ENVIRONMENT`),
so both sides measure the same thing.

Why (issue 15, "fidelity of today's torch path"): every forward pass
allocates and frees its activations, megabytes at batch 4 and up. glibc's
``malloc`` either keeps that memory for the next pass or gives it back to the
kernel (``munmap`` of a block above its *dynamic* mmap threshold, or a trim
of the heap's top above its trim threshold), and then the next pass faults
every page of it in again: 1,000 to 3,000 minor page faults and 2 to 8 ms of
kernel time per iteration of a two-layer BERT at batch 4 and 8, several per
cent of the latency. Which of the two a process falls into depends on its
history (the thresholds move up as blocks are freed, and one small live
block at the heap's top stops the trim), so two processes running the same
model differed by a few per cent with a sign: testfleet's runner and the plain
loop in ``benchmarks/fidelity.py`` had different histories. With mmap off for
``malloc`` and the trim threshold out of reach, every process reaches the
same steady state after the warmup (no faults per timed iteration), the one a
long-running inference server is in.

glibc only: elsewhere (musl, macOS, Windows) there is no ``mallopt`` and the
answer says so; the run goes on with the platform's allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from enum import StrEnum

log = logging.getLogger(__name__)

# glibc's <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

#: Freed memory at the top of the heap is handed back only above this many
#: bytes: 2 GiB, the most ``mallopt`` takes (an ``int``). glibc's default is
#: 128 KiB, raised dynamically to twice the largest freed mmapped block;
#: setting it also ends that dynamic adjustment.
TRIM_THRESHOLD_BYTES = 2**31 - 1
#: No block is served by its own mmap (which ``free`` would unmap at once).
MMAP_MAX = 0

#: The same setting through glibc's environment variables, read when a process
#: starts: how ``benchmarks/fidelity.py`` runs its plain loop, with no
#: testfleet code in it.
GLIBC_ENVIRONMENT = {
    "MALLOC_MMAP_MAX_": str(MMAP_MAX),
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES),
}


class AllocatorSetting(StrEnum):
    """What :func:`keep_freed_memory` achieved, recorded in the run's conditions."""

    KEEP_FREED = "glibc: freed memory kept (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)"
    UNAVAILABLE = "platform allocator unchanged (no glibc mallopt)"
    REFUSED = "platform allocator unchanged (mallopt refused)"
    NOT_SET = "platform allocator unchanged (not asked)"


_current = AllocatorSetting.NOT_SET


def _glibc() -> ctypes.CDLL | None:
    """The C library this process runs on, if it has glibc's ``mallopt``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_freed_memory(libc: ctypes.CDLL | None = None) -> AllocatorSetting:
    """Tell glibc to keep freed memory for reuse; what it achieved.

    ``libc`` is for tests (a fake); by default the process's own C library.
    Never raises: a platform without it benchmarks with its own allocator.
    """
    global _current
    _current = _apply(libc if libc is not None else _glibc())
    return _current


def _apply(lib: ctypes.CDLL | None) -> AllocatorSetting:
    if lib is None:
        return AllocatorSetting.UNAVAILABLE
    # mallopt returns 1 on success, 0 on error.
    mmap_ok = lib.mallopt(M_MMAP_MAX, MMAP_MAX)
    trim_ok = lib.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    if mmap_ok != 1 or trim_ok != 1:
        log.warning("mallopt refused (mmap max: %s, trim threshold: %s)", mmap_ok, trim_ok)
        return AllocatorSetting.REFUSED
    return AllocatorSetting.KEEP_FREED


def current_setting() -> AllocatorSetting:
    """What this process's last :func:`keep_freed_memory` achieved (for the conditions).

    The C allocator is process-wide state, so its setting is too.
    """
    return _current
