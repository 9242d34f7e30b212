"""The benchmark child's allocator setting (allocator.py), the fix for issue 15's
fidelity bias: with it, memory a forward pass frees is reused by the next one
instead of being faulted in from the kernel again, in every process alike.

The real checks run glibc in a child process (the setting is process-wide and
must not leak into the test process) and count minor page faults: a count, not a
timing, so they do not depend on the machine's speed or load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from testfleet.worker.benchmarking import allocator
from testfleet.worker.benchmarking.allocator import (
    GLIBC_ENVIRONMENT,
    M_MMAP_MAX,
    M_TRIM_THRESHOLD,
    MMAP_MAX,
    TRIM_THRESHOLD_BYTES,
    AllocatorSetting,
    keep_freed_memory,
)


class FakeLibc:
    """Records ``mallopt`` calls and answers ``answer`` (glibc: 1 is success)."""

    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return self.answer


def test_it_turns_off_mmap_and_the_trim_and_says_so() -> None:
    libc = FakeLibc()
    assert keep_freed_memory(libc) is AllocatorSetting.KEEP_FREED  # type: ignore[arg-type]
    assert sorted(libc.calls) == sorted(
        [(M_MMAP_MAX, MMAP_MAX), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)]
    )
    assert TRIM_THRESHOLD_BYTES <= 2**31 - 1  # mallopt takes an int


def test_a_refusal_or_no_glibc_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    assert keep_freed_memory(FakeLibc(answer=0)) is AllocatorSetting.REFUSED  # type: ignore[arg-type]
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert keep_freed_memory() is AllocatorSetting.UNAVAILABLE


def test_the_plain_loops_environment_says_what_mallopt_says() -> None:
    # fidelity.py's plain loop gets the setting from glibc's environment
    # variables; they must carry the runner's values, or the two sides drift apart.
    assert {
        "MALLOC_MMAP_MAX_": str(MMAP_MAX),
        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES),
    } == GLIBC_ENVIRONMENT


#: 40 MiB: above glibc's largest dynamic mmap threshold (32 MiB), so by default
#: every such block is mmapped and unmapped again on free: a forward pass's
#: large activations.
_CHILD = textwrap.dedent(
    """
    import ctypes, json, resource, sys
    from testfleet.worker.benchmarking.allocator import keep_freed_memory
    setting = keep_freed_memory().value if sys.argv[1] == "mallopt" else "none"
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 40 << 20
    def one_pass():
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    one_pass()  # the warmup: the memory comes from the kernel once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        one_pass()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
    print(json.dumps({"setting": setting, "faults_per_pass": faults, "pages": size // 4096}))
    """
)


def faults_per_pass(how: str, extra_env: dict[str, str]) -> dict[str, float | str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, how],
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answer: dict[str, float | str] = json.loads(completed.stdout)
    return answer


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_freed_memory_is_reused_after_the_warmup_with_mallopt_or_the_environment() -> None:
    default = faults_per_pass("none", {})
    with_mallopt = faults_per_pass("mallopt", {})
    with_environment = faults_per_pass("none", GLIBC_ENVIRONMENT)
    pages = float(default["pages"])
    # The control: by default every pass faults its block in again (the bias's cause).
    assert float(default["faults_per_pass"]) > pages / 2, default
    # The runner's mallopt and the plain loop's environment both end it.
    assert with_mallopt["setting"] == AllocatorSetting.KEEP_FREED.value
    assert float(with_mallopt["faults_per_pass"]) < pages / 20, with_mallopt
    assert float(with_environment["faults_per_pass"]) < pages / 20, with_environment


def test_the_conditions_record_what_the_last_call_achieved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(allocator, "_current", AllocatorSetting.NOT_SET)
    assert allocator.current_setting() is AllocatorSetting.NOT_SET
    keep_freed_memory(FakeLibc(answer=0))  # type: ignore[arg-type]
    assert allocator.current_setting() is AllocatorSetting.REFUSED
