"""Serial pytest beside ``testfleet run`` on the same suite: run both, compare.

Used by the integration tests that check ``testfleet run`` reports what
serial pytest reports (``test_it_real_suite.py``, ``test_it_suite_shapes.py``):
:func:`compare_serial_and_fleet` runs a project's suite with plain pytest
(``python -m pytest``), then with ``testfleet run`` against a real
coordinator and real workers (the ``fleet`` fixture), and asserts they agree
on the final summary line's counts, the ``-r`` short summary's lines (as a
multiset: a fleet reports tests as they finish), the JUnit XML (totals and
each test case's outcome) and the exit code; and that the fleet run went
through the fleet (its first-pass chunks hold every collected node id once).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet

from testfleet.client import COORDINATOR_ENV
from testfleet.fleetrun.summary_line import ANSI_ESCAPE, summary_counts

#: Upper bounds for a whole pytest or ``testfleet run`` process (never expectations).
#: Upper bounds for a whole pytest or ``testfleet run`` process (never expectations).
SERIAL_TIMEOUT = 120
FLEET_TIMEOUT = 240


# ------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class JUnit:
    """What a JUnit XML file says: suite totals and each test case's outcome."""

    totals: dict[str, int]
    #: (classname, name, outcome) -> how many; outcome is "passed" or the
    #: sorted child tags among failure, error and skipped, joined by "+".
    cases: Counter[tuple[str, str, str]]


def read_junit(path: Path) -> JUnit:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    totals = {
        key: sum(int(suite.get(key, 0)) for suite in suites)
        for key in ("tests", "failures", "errors", "skipped")
    }
    cases: Counter[tuple[str, str, str]] = Counter()
    for case in root.iter("testcase"):
        tags = sorted({child.tag for child in case} & {"failure", "error", "skipped"})
        cases[case.get("classname", ""), case.get("name", ""), "+".join(tags) or "passed"] += 1
    return JUnit(totals, cases)


@dataclass(frozen=True)
class Outcome:
    """One finished pytest-like process: exit code, output, summary counts, JUnit."""

    returncode: int
    output: str
    counts: dict[str, int] | None
    junit: JUnit | None

    def describe(self, label: str) -> str:
        tail = "\n".join(self.output.strip().splitlines()[-60:])
        return f"--- {label}: exit {self.returncode}, counts {self.counts}\n{tail}"

    def short_summary(self) -> Counter[str]:
        """The ``-r`` short summary's lines (none without ``-r``), as a multiset."""
        lines = ANSI_ESCAPE.sub("", self.output).splitlines()
        start = next((i for i, line in enumerate(lines) if "short test summary info" in line), None)
        if start is None:
            return Counter()
        found = Counter[str]()
        for line in lines[start + 1 :]:
            if line.startswith("=") or line.startswith("!"):
                break
            found[line] += 1
        return found

    def lines_starting(self, prefix: str) -> list[str]:
        """The output's lines that start with ``prefix`` (a plugin's own summary)."""
        return [
            line
            for line in ANSI_ESCAPE.sub("", self.output).splitlines()
            if line.startswith(prefix)
        ]


def run_pytest_process(
    command: Sequence[str], cwd: Path, env: dict[str, str], junit: Path, timeout: float
) -> Outcome:
    done = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Outcome(
        done.returncode,
        done.stdout,
        summary_counts(done.stdout),
        read_junit(junit) if junit.is_file() else None,
    )


def pytest_env(fleet: Fleet) -> dict[str, str]:
    """The fleet's environment, minus what would change how an inner pytest behaves."""
    env = fleet.env()
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_CURRENT_TEST", COORDINATOR_ENV):
        env.pop(name, None)
    return env


def fleet_command(url: str, path: str, pytest_args: Sequence[str]) -> list[str]:
    """The ``testfleet run`` command line (the one place that knows its syntax)."""
    return [sys.executable, "-m", "testfleet", "run", "--coordinator", url, path, *pytest_args]


def collected_node_ids(project: Path, env: dict[str, str], pytest_args: Sequence[str]) -> list[str]:
    """The node ids serial pytest collects (and selects) with ``pytest_args``."""
    # -q lists node ids; the run's own verbosity options would undo it.
    quiet = [a for a in pytest_args if a not in ("-v", "-vv", "--verbose", "-q", "--quiet")]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", ".", "--collect-only", "-q", *quiet],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SERIAL_TIMEOUT,
        check=False,
    )
    ids = [line for line in done.stdout.splitlines() if "::" in line and not line[:1].isspace()]
    assert ids, f"collection found nothing (exit {done.returncode}):\n{done.stdout}{done.stderr}"
    return ids


def first_pass_chunks(fleet: Fleet) -> list[dict[str, Any]]:
    """Every ``test`` task's config whose chunk belongs to a run's first pass
    (warm-up tasks, which carry no node ids, left out)."""
    configs: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = fleet.client.list_tasks(task_type="test", limit=1000, offset=offset)
        configs += [
            {**task["config"], "worker_id": task["worker_id"]}
            for task in page["tasks"]
            if task["config"].get("rerun", 0) == 0 and task["config"].get("node_ids")
        ]
        offset += len(page["tasks"])
        if not page["tasks"] or offset >= page["total"]:
            return configs


def compare_serial_and_fleet(
    fleet: Fleet, project: Path, workers: Sequence[str], pytest_args: Sequence[str]
) -> tuple[Outcome, Outcome]:
    """Run ``project``'s suite serially, then with ``testfleet run``; assert they agree.

    The workers are started before the serial run and waited for after it (they
    come up while it runs). Returns (serial, fleet) for suite-specific checks.
    """
    fleet.start_coordinator(heartbeat_timeout=RELAXED_HEARTBEAT_TIMEOUT)
    for worker_id in workers:
        fleet.start_worker(worker_id, slots=1, wait=False)
    env = pytest_env(fleet)
    args = ["-p", "no:cacheprovider", *pytest_args]

    serial_xml = fleet.root / "serial.xml"
    serial = run_pytest_process(
        [sys.executable, "-m", "pytest", ".", *args, f"--junitxml={serial_xml}"],
        project,
        env,
        serial_xml,
        SERIAL_TIMEOUT,
    )
    assert serial.counts is not None, serial.describe("serial pytest: no summary line")
    assert serial.junit is not None, serial.describe("serial pytest: no JUnit XML")
    node_ids = collected_node_ids(project, env, args)

    fleet.wait_for_workers(workers)
    fleet_xml = fleet.root / "fleet.xml"
    fleet_run = run_pytest_process(
        fleet_command(fleet.url, ".", [*args, f"--junitxml={fleet_xml}"]),
        project,
        env,
        fleet_xml,
        FLEET_TIMEOUT,
    )
    both = serial.describe("serial pytest") + "\n" + fleet_run.describe("testfleet run")

    assert fleet_run.counts == serial.counts, both
    assert fleet_run.returncode == serial.returncode, both
    assert fleet_run.short_summary() == serial.short_summary(), both
    assert fleet_run.junit is not None, both
    assert fleet_run.junit.totals == serial.junit.totals, both
    assert fleet_run.junit.cases == serial.junit.cases, both

    chunks = first_pass_chunks(fleet)
    assert chunks, "testfleet run submitted no test tasks\n" + both
    sent = [node_id for chunk in chunks for node_id in chunk["node_ids"]]
    assert sorted(sent) == sorted(node_ids), "first-pass chunks vs serial collection"
    assert {c["worker_id"] for c in chunks} <= set(workers), chunks
    return serial, fleet_run


def unpack(archive: Path, into: Path) -> Path:
    """Extract an sdist into ``into``; return its single top-level directory."""
    with tarfile.open(archive) as tar:
        # The "data" filter refuses links and paths outside ``into`` (3.11.4+).
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python 3.11.0-3.11.3; the archive is vendored and its hash recorded
            tar.extractall(into)
    (top,) = [p for p in into.iterdir() if p.is_dir()]
    return top
