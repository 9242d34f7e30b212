"""``testfleet run`` reports what serial pytest reports, on suites nobody wrote for it.

Each test runs one suite twice in the same directory: plain serial pytest
(``python -m pytest``), then ``testfleet run`` against a real coordinator and
real workers (the ``fleet`` fixture). The two must agree on the final summary
line's counts, the JUnit XML (totals and each test case's outcome) and the
exit code. The fleet run must also have gone through the fleet: its ``test``
tasks' first-pass chunks hold every collected node id exactly once.

* six 1.17.0, unpacked from the sdist vendored in ``tests/data/sdists`` (no
  network): 198 passed and 2 skipped on this machine (the skips depend on the
  Python, so the test compares with whatever serial pytest reports here).
* A small suite generated here with every kind of outcome: failures, skips
  (marker, imperative, fixture, module level), xfail and xpass (strict too),
  setup and teardown errors, a deselection; serial pytest exits 1.

Warnings count too: six's tests raise one (they import the deprecated
``tkinter.tix``), on a worker, and the fleet's summary line must show it as
the serial one does.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import textwrap
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from it_fleet import RELAXED_HEARTBEAT_TIMEOUT, Fleet

from testfleet.client import COORDINATOR_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SDIST = Path(__file__).resolve().parents[1] / "data" / "sdists" / "six-1.17.0.tar.gz"
#: Upper bounds for a whole pytest or ``testfleet run`` process (never expectations).
SERIAL_TIMEOUT = 120
FLEET_TIMEOUT = 240

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SUMMARY = re.compile(r"^=*\s*(?P<body>.+?)\s+in\s+[\d.]+s(?:\s+\([\d:]+\))?\s*=*$")


# ------------------------------------------------------------------ helpers


def summary_counts(output: str) -> dict[str, int] | None:
    """pytest's final summary line as counts, e.g. {"passed": 198, "skipped": 2}.

    "1 error" and "2 errors" both count under "errors" (likewise warnings);
    "no tests ran" is {}; None when there is no summary line at all.
    """
    for line in reversed(_ANSI.sub("", output).splitlines()):
        match = _SUMMARY.match(line.strip())
        if match is None:
            continue
        if match["body"] == "no tests ran":
            return {}
        counts: dict[str, int] = {}
        for part in match["body"].split(", "):
            number, _, word = part.partition(" ")
            if not number.isdigit() or not word:
                break
            counts[{"error": "errors", "warning": "warnings"}.get(word, word)] = int(number)
        else:
            return counts
    return None


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
    done = subprocess.run(
        [sys.executable, "-m", "pytest", ".", "--collect-only", "-q", *pytest_args],
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


# ------------------------------------------------------------------ six


@pytest.mark.timeout(300)
def test_six_from_its_sdist_matches_serial_pytest(fleet: Fleet, tmp_path: Path):
    project = unpack(SDIST, tmp_path / "sdist")
    assert (project / "test_six.py").is_file()
    assert (project / "six.py").is_file()

    serial, _ = compare_serial_and_fleet(fleet, project, ["six-a", "six-b", "six-c"], [])

    # Sanity: the suite really ran (a few hundred tests, nothing failing here).
    assert serial.returncode == 0, serial.describe("serial pytest")
    assert serial.counts is not None
    assert serial.counts.get("passed", 0) >= 150, serial.counts
    assert set(serial.counts) <= {"passed", "skipped", "warnings"}, serial.counts


# ------------------------------------------------------------------ every outcome

MIXED_SUITE = {
    "pytest.ini": """\
        [pytest]
        """,
    "conftest.py": """\
        import pytest


        @pytest.fixture
        def answer():
            return 42
        """,
    "test_basics.py": """\
        import pytest


        def test_passes():
            assert 1 + 1 == 2


        def test_fails():
            assert 1 + 1 == 3


        @pytest.mark.parametrize("n", range(6))
        def test_param(n):
            assert n != 4


        def test_prints_and_fails():
            print("captured output of a failing test")
            assert [1, 2] == [1, 3]


        def test_uses_conftest_fixture(answer):
            assert answer == 42


        def test_deselected_by_k():
            raise AssertionError("-k should have left this out")
        """,
    "test_outcomes.py": """\
        import pytest


        @pytest.fixture
        def skipping():
            pytest.skip("skipped by a fixture")


        @pytest.mark.skip(reason="marked skip")
        def test_marked_skip():
            raise AssertionError("not run")


        @pytest.mark.skipif(True, reason="condition holds")
        def test_skipif():
            raise AssertionError("not run")


        def test_imperative_skip():
            pytest.skip("skipped at run time")


        def test_skipped_by_fixture(skipping):
            raise AssertionError("not run")


        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert False


        def test_imperative_xfail():
            pytest.xfail("gave up")


        @pytest.mark.xfail(reason="fixed already")
        def test_xpass():
            pass


        @pytest.mark.xfail(reason="strict", strict=True)
        def test_xpass_strict():
            pass
        """,
    "test_errors.py": """\
        import pytest


        @pytest.fixture
        def broken_setup():
            raise RuntimeError("setup failed")


        @pytest.fixture
        def broken_teardown():
            yield 1
            raise RuntimeError("teardown failed")


        def test_setup_error(broken_setup):
            pass


        def test_teardown_error_after_pass(broken_teardown):
            pass


        def test_teardown_error_after_fail(broken_teardown):
            assert broken_teardown == 2


        class TestGrouped:
            def test_method_passes(self):
                assert True

            def test_method_fails(self):
                assert {"a": 1} == {"a": 2}
        """,
    "test_module_skip.py": """\
        import pytest

        pytest.skip("the whole module", allow_module_level=True)


        def test_never_collected():
            raise AssertionError("not run")
        """,
    "sub/test_nested.py": """\
        import pytest


        def test_nested_passes():
            pass


        @pytest.mark.parametrize("word", ["a", "b"])
        def test_nested_param(word):
            assert word in "ab"
        """,
}

#: What serial pytest reports for MIXED_SUITE with ``-k "not deselected_by_k"``.
MIXED_COUNTS = {
    "passed": 12,
    "failed": 6,
    "errors": 3,
    "skipped": 5,
    "xfailed": 2,
    "xpassed": 1,
    "deselected": 1,
}


@pytest.mark.timeout(300)
def test_every_outcome_kind_matches_serial_pytest(fleet: Fleet, tmp_path: Path):
    project = tmp_path / "mixed"
    for name, source in MIXED_SUITE.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))

    serial, _ = compare_serial_and_fleet(
        fleet, project, ["mixed-a", "mixed-b"], ["-k", "not deselected_by_k"]
    )

    # Sanity: the generated suite produces what it was written to produce.
    assert serial.counts == MIXED_COUNTS, serial.describe("serial pytest")
    assert serial.returncode == 1, serial.describe("serial pytest")


def test_summary_counts_reads_pytest_summary_lines():
    """The parser the comparisons rely on, on the lines pytest writes."""
    assert summary_counts(
        "x\n===== 398 passed, 2 failed, 1 error, 3 warnings in 2.71s (0:00:02) =====\n"
    ) == {"passed": 398, "failed": 2, "errors": 1, "warnings": 3}
    assert summary_counts("198 passed, 2 skipped in 0.46s\n") == {"passed": 198, "skipped": 2}
    assert summary_counts("=== no tests ran in 0.01s ===") == {}
    assert summary_counts("FAILED t.py::test_x - assert 1 in 2.0s") is None
