"""How long a worker's pytest session takes to start: zygote, then activation.

A worker keeps a *zygote* per interpreter (pytest and its built-in plugins
imported); a run's first chunk on a worker slot *activates* one: pytest reads
the project's configuration, loads the installed plugins (importing and
assertion-rewriting them, as a serial run does) and the conftest files, and
collects. This script times both, in this interpreter's environment, on a
generated 20-test project, each round with a fresh pool:

* zygote ready: from :meth:`SessionPool.prewarm` to the zygote's ``ready``;
* activation: from :meth:`SessionPool.acquire` to the session's ``collected``.

    .venv/bin/python benchmarks/session_start.py --rounds 15

Prints medians (and minimums). pytest caches rewritten plugin modules as
bytecode unless ``PYTHONDONTWRITEBYTECODE`` is set, which makes activation
much slower; run it with and without (``env -u PYTHONDONTWRITEBYTECODE``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from testfleet.worker.pytest_sessions.sessions import Activation, SessionKey, SessionPool

TEST_MODULE = """
import pytest


@pytest.mark.parametrize("n", range(5))
def test_x(n):
    assert n >= 0
"""


def write_project(root: Path) -> Path:
    (root / "tests").mkdir(parents=True)
    # pytest-asyncio, where installed, warns without it.
    (root / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    for index in range(4):
        (root / "tests" / f"test_m{index}.py").write_text(TEST_MODULE)
    return root


async def one_round(project: Path, work: Path, index: int) -> tuple[float, float]:
    pool = SessionPool(keep_zygotes=True, replenish_quiet_seconds=3600.0)
    try:
        started = time.perf_counter()
        await pool.prewarm()
        await pool.zygote()
        ready = time.perf_counter()
        key = SessionKey(
            run_id=f"bench-{index}",
            project=str(project),
            python=sys.executable,
            args=("tests", "-p", "no:cacheprovider"),
            env=(),
            full_collection=True,
        )
        await pool.acquire(key, Activation(env=dict(os.environ), work_dir=work, worker_id="b"))
        activated = time.perf_counter()
    finally:
        await pool.close()
    return ready - started, activated - ready


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory(prefix="session-start-") as tmp:
        project = write_project(Path(tmp) / "project")
        zygotes, activations = [], []
        for index in range(rounds):
            zygote, activation = await one_round(project, Path(tmp) / "work", index)
            zygotes.append(zygote)
            activations.append(activation)
    bytecode = "off" if sys.dont_write_bytecode else "on"
    print(f"{rounds} rounds, {sys.executable}, bytecode cache {bytecode}")
    for label, values in (("zygote ready", zygotes), ("activation", activations)):
        print(
            f"  {label:<13} median {statistics.median(values) * 1000:6.0f} ms"
            f"   min {min(values) * 1000:6.0f} ms"
        )
    both = [z + a for z, a in zip(zygotes, activations, strict=True)]
    print(f"  {'both':<13} median {statistics.median(both) * 1000:6.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
