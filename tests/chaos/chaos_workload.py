"""The chaos suite's workload: tasks submitted while faults hit the fleet, and a
pytest run through ``testfleet run`` compared with a serial run.

Used by the harness (``chaos_fleet.py``). :class:`Submitter` submits small
batches of ``command`` and ``simulated`` tasks from a thread with ids of its
own making, and records which were *accepted*: answered 2xx, or (on a retry
of a batch whose answer was lost) refused as duplicates, which proves the
earlier try was committed. A refused or unanswered submission is not
accepted; the batch is tried again until it is, or the workload stops.

:func:`write_suite` makes a deterministic pytest suite (some tests fail,
some skip, on purpose); :func:`run_serial` runs it with plain pytest first,
then :class:`PytestRuns` runs it with ``testfleet run`` over and over in the
background while faults go on.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testfleet.client import COORDINATOR_ENV, FleetClient, FleetError
from testfleet.fleetrun.summary_line import summary_counts

#: Tasks per submission (all or nothing).
BATCH = 4
#: Seconds between submissions, drawn uniformly.
PAUSE_SECONDS = (0.1, 0.4)
#: One submission's HTTP timeout: a stopped coordinator must not hang the thread.
SUBMIT_TIMEOUT_SECONDS = 5.0


def task_document(rng: random.Random, task_id: str) -> dict[str, Any]:
    """One task of the mix: a quick command, a short sleep, a failing command,
    or a simulated task that sometimes fails."""
    shape = rng.randrange(5)
    if shape == 0:
        config: dict[str, Any] = {"argv": [sys.executable, "-c", "print('chaos')"]}
        kind = "command"
    elif shape == 1:
        config, kind = {"argv": ["true"]}, "command"
    elif shape == 2:
        config, kind = {"argv": ["sleep", "0.2"]}, "command"
    elif shape == 3:
        config, kind = {"argv": ["false"]}, "command"
    else:
        config = {"duration_seconds": round(rng.uniform(0.05, 0.5), 3), "fail_probability": 0.2}
        kind = "simulated"
    return {"task_id": task_id, "type": kind, "config": config}


@dataclass
class SubmitterFigures:
    accepted: list[str] = field(default_factory=list)
    #: Accepted on a retry that was refused as a duplicate (the first try had committed).
    confirmed_by_duplicate: int = 0
    #: Refusals and failures by kind (status code or "unreachable").
    refusals: Counter[str] = field(default_factory=Counter)
    #: A duplicate refusal on a batch's first try: ids reused, a harness bug.
    unexpected_duplicates: list[str] = field(default_factory=list)


class Submitter:
    """Submit batches from a thread until :meth:`stop`; see the module docstring."""

    def __init__(
        self, url: str, token: str, ca: Path | None, seed: int, prefix: str = "chaos"
    ) -> None:
        self._client = FleetClient(url, timeout=SUBMIT_TIMEOUT_SECONDS, ca=ca, token=token)
        self._rng = random.Random(seed)
        self._prefix = f"{prefix}-{seed}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-submitter", daemon=True)
        self.figures = SubmitterFigures()
        self._next = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> SubmitterFigures:
        self._stop.set()
        self._thread.join(SUBMIT_TIMEOUT_SECONDS * 3)
        self._client.close()
        return self.figures

    def _batch(self) -> list[dict[str, Any]]:
        documents = []
        for _ in range(BATCH):
            documents.append(task_document(self._rng, f"{self._prefix}-{self._next:06d}"))
            self._next += 1
        return documents

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._batch()
            ids = [d["task_id"] for d in batch]
            tries = 0
            while not self._stop.is_set():
                tries += 1
                try:
                    accepted = self._client.submit(batch)
                except FleetError as exc:
                    if exc.status == 409 and exc.code == "duplicate_task_id":
                        if tries == 1:
                            self.figures.unexpected_duplicates += ids
                        else:
                            self.figures.accepted += ids
                            self.figures.confirmed_by_duplicate += len(ids)
                        break
                    self.figures.refusals[str(exc.status or exc.code)] += 1
                    self._stop.wait(0.5)
                    continue
                self.figures.accepted += accepted
                break
            self._stop.wait(self._rng.uniform(*PAUSE_SECONDS))


# ------------------------------------------------------------------ pytest run


def write_suite(root: Path, tests: int) -> Path:
    """A project of ``tests`` tests in files of 20: every 13th fails, every 29th
    skips, the rest pass (deterministic; no test depends on time or order)."""
    root.mkdir(parents=True, exist_ok=True)
    # The option pytest-asyncio (installed with the dev extra) warns about when unset.
    (root / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    per_file = 20
    for start in range(0, tests, per_file):
        lines = ["import pytest", ""]
        for n in range(start, min(start + per_file, tests)):
            if n % 13 == 5:
                body = f"    assert {n} == -1, 'fails on purpose'"
            elif n % 29 == 7:
                body = "    pytest.skip('skips on purpose')"
            else:
                body = f"    assert {n} + 1 > {n}"
            lines += [f"def test_case_{n:04d}():", body, ""]
        (root / f"test_part_{start // per_file:03d}.py").write_text("\n".join(lines))
    return root


def pytest_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` minus what would change how an inner pytest behaves."""
    cleaned = dict(env)
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_CURRENT_TEST", COORDINATOR_ENV):
        cleaned.pop(name, None)
    return cleaned


@dataclass
class RunResult:
    returncode: int
    counts: dict[str, int] | None
    output: str
    seconds: float = 0.0

    def refused_at_start(self) -> bool:
        """Whether ``testfleet run`` found no fleet to run on as it started, and said
        so and exited at once, by design: it could not reach the coordinator before
        its run began (no "[fleet] run" line yet), or no worker had (re)connected
        (just after a coordinator restart). No test ran."""
        if self.counts:
            return False
        unreachable = (
            "--fleet: cannot reach the coordinator" in self.output
            and "[fleet] run " not in self.output
        )
        return unreachable or "--fleet: no connected worker takes test tasks" in self.output

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


def run_serial(project: Path, env: Mapping[str, str], timeout: float = 180) -> RunResult:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", ".", "-p", "no:cacheprovider", "-q"],
        cwd=project,
        env=pytest_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return RunResult(done.returncode, summary_counts(done.stdout), done.stdout)


class PytestRuns:
    """``testfleet run`` on ``project`` again and again from a thread until
    :meth:`stop`, so that every part of the fault schedule meets a run; each
    run's output goes to ``<log_dir>/testfleet-run-N.log``."""

    def __init__(
        self,
        project: Path,
        url: str,
        env: Mapping[str, str],
        log_dir: Path,
        run_timeout: float,
    ) -> None:
        self._args = (project, url, dict(env))
        self._log_dir = log_dir
        self._run_timeout = run_timeout
        self._stop = threading.Event()
        self._current: PytestRun | None = None
        self.results: list[RunResult] = []
        #: Runs that found the coordinator down as they started (they fail at
        #: once, by design: see FleetRun's ``reached``) and were started again.
        self.refused_at_start = 0
        self._thread = threading.Thread(target=self._loop, name="chaos-pytest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            log = self._log_dir / f"testfleet-run-{len(self.results) + 1}.log"
            self._current = PytestRun(*self._args, log)
            result = self._current.wait(self._run_timeout)
            if result.refused_at_start():
                self.refused_at_start += 1
                log.rename(log.with_suffix(f".refused-{self.refused_at_start}.log"))
                self._stop.wait(1.0)
                continue
            self.results.append(result)
            if result.counts is None:
                self._stop.wait(1.0)  # a run that failed at once: do not spin

    def stop(self, timeout: float) -> list[RunResult]:
        """Start no more runs; wait up to ``timeout`` for the one under way (then kill it)."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive() and self._current is not None:
            self._current.kill()
            self._thread.join(30)
        return self.results


class PytestRun:
    """``testfleet run`` on ``project`` as a background process (its output to a file)."""

    def __init__(self, project: Path, url: str, env: Mapping[str, str], log: Path) -> None:
        self.project = project
        self.log = log
        self._handle = log.open("wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "testfleet",
                "run",
                "--coordinator",
                url,
                ".",
                "-p",
                "no:cacheprovider",
            ],
            cwd=project,
            env=pytest_env(env),
            stdin=subprocess.DEVNULL,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float) -> RunResult:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        self._handle.close()
        output = self.log.read_text(errors="replace")
        return RunResult(
            self.process.returncode, summary_counts(output), output, time.monotonic() - self.started
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
