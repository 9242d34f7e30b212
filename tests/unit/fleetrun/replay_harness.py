"""Run a suite serially while recording it as a worker would, then replay the
records into a second pytest run as ``pytest --fleet`` does, and compare.

Used by the reports tests: the serial run loads :data:`CAPTURE_PLUGIN`, which
builds one record per test with the workers' own code
(:class:`testfleet.worker.pytest_sessions.report_data.RecordBuilder`, fed from a
``pytest_runtest_logreport`` wrapper and ``pytest_warning_recorded``, as the
session child feeds it) and writes them as JSON lines. The replayed run loads
:data:`REPLAY_PLUGIN`, which runs no test: it validates each line as a
``TestRecord`` and hands it to :func:`testfleet.fleetrun.session.feed_record`,
the function the ``--fleet`` plugin feeds every worker's record through.
Both runs write JUnit XML; :class:`Run` reads what a comparison needs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from testfleet.domain.pytest_tasks import TestRecord

CAPTURE_PLUGIN = """
import os
from pathlib import Path

import pytest

from testfleet.worker.pytest_sessions import report_data

BUILDERS = {}
ROOT = []


def pytest_configure(config):
    ROOT.append(str(config.rootpath))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    BUILDERS[item.nodeid] = report_data.RecordBuilder(
        item.nodeid,
        report_data.location_entry(item.location),
        report_data.keyword_names(item.keywords),
    )
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_logreport(report):
    yield
    builder = BUILDERS.get(report.nodeid)
    if builder is not None:
        if report.when == "setup":
            builder.restart()
        builder.add(report, ROOT[0])


def pytest_warning_recorded(warning_message, when, nodeid, location):
    if when == "runtest" and nodeid in BUILDERS:
        BUILDERS[nodeid].add_warning(warning_message)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    import json

    with Path(os.environ["FLEET_RECORDS"]).open("w") as out:
        for builder in BUILDERS.values():
            out.write(json.dumps(builder.record()) + "\\n")
"""

REPLAY_PLUGIN = """
import os
from pathlib import Path

from testfleet.domain.pytest_tasks import TestRecord
# The module, not the function: a plugin module's pytest_* names are hooks.
from testfleet.fleetrun import session as fleet_session


def pytest_runtestloop(session):
    lines = Path(os.environ["FLEET_RECORDS"]).read_text().splitlines()
    by_id = {}
    for line in lines:
        record = TestRecord.model_validate_json(line)
        by_id[record.nodeid] = record
    for item in session.items:
        fleet_session.feed_record(session.config, by_id[item.nodeid])
    return True
"""

_SUMMARY_COUNT = re.compile(
    r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?|warnings?|"
    r"subtests passed|subtests failed|subtests skipped)"
)
_DURATION = re.compile(r"^[\d.]+s (setup|call|teardown)\s+(\S+)$")


@dataclass
class Run:
    """One finished pytest process: exit code, output and JUnit XML."""

    returncode: int
    stdout: str
    junit: ET.Element

    def counts(self) -> dict[str, int]:
        """The final summary line's counts ("2 failed, 3 passed ... in 0.05s")."""
        last = self.stdout.strip().splitlines()[-1]
        assert " in " in last, self.stdout
        return {kind.rstrip("s"): int(n) for n, kind in _SUMMARY_COUNT.findall(last)}

    def short_summary(self) -> list[str]:
        """The ``-r`` short summary's lines, in order."""
        lines = self.stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if "short test summary info" in line)
        return lines[start + 1 : -1]

    def section(self, title: str) -> str:
        """The text of one ``=== title ===`` section (up to the next one);
        ``title`` is a regular expression."""
        match = re.search(rf"^=+ {title} =+$\n(.*?)(?=^=+ )", self.stdout, re.S | re.M)
        assert match is not None, f"no {title!r} section:\n{self.stdout}"
        # The JUnit file's name differs between the runs compared.
        lines = match.group(1).splitlines(keepends=True)
        return "".join(line for line in lines if "generated xml file" not in line)

    def durations(self) -> list[tuple[str, str]]:
        """(phase, node id) of each ``--durations`` line, in order."""
        return [
            (match[1], match[2])
            for line in self.section(r"slowest \d* ?durations").splitlines()
            if (match := _DURATION.match(line.strip()))
        ]

    def junit_totals(self) -> dict[str, str]:
        suite = self.junit if self.junit.tag == "testsuite" else self.junit[0]
        return {key: suite.attrib[key] for key in ("tests", "failures", "errors", "skipped")}

    def junit_cases(self) -> list[tuple[str, str, list[tuple[str, str | None]]]]:
        return [
            (
                case.attrib.get("classname", ""),
                case.attrib.get("name", ""),
                [
                    (child.tag, child.attrib.get("message"))
                    for child in case
                    if child.tag in ("failure", "error", "skipped")
                ],
            )
            for case in self.junit.iter("testcase")
        ]


def run_pytest(project: Path, plugin: str, args: Sequence[str], name: str) -> Run:
    """``pytest -p plugin args`` in ``project`` (plugin autoload off: only the
    suite's own plugins), with JUnit XML written to ``name.xml``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env.update(
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(project / "plugins"), env.get("PYTHONPATH")])),
        FLEET_RECORDS=str(project / "records.jsonl"),
        COLUMNS="200",
    )
    junit = project / f"{name}.xml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            plugin,
            "-p",
            "no:cacheprovider",
            *args,
            f"--junitxml={junit}",
            "suite",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert junit.exists(), done.stdout + done.stderr
    return Run(done.returncode, done.stdout, ET.parse(junit).getroot())


def make_project(root: Path, files: dict[str, str], ini: str = "") -> Path:
    """A project under ``root``: ``suite/`` with ``files``, a pytest.ini, and the
    capture and replay plugins on the path."""
    (root / "pytest.ini").write_text("[pytest]\njunit_family = xunit1\n" + ini)
    for name, text in files.items():
        path = root / "suite" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (root / "plugins").mkdir()
    (root / "plugins" / "fleet_capture.py").write_text(CAPTURE_PLUGIN)
    (root / "plugins" / "fleet_replay.py").write_text(REPLAY_PLUGIN)
    return root


def serial_and_replayed(project: Path, args: Sequence[str]) -> tuple[Run, Run]:
    """The suite run serially (recording it), then its records replayed."""
    serial = run_pytest(project, "fleet_capture", args, "serial")
    replayed = run_pytest(project, "fleet_replay", args, "replayed")
    return serial, replayed


def read_records(project: Path) -> list[TestRecord]:
    """The records the serial run wrote, in the order its tests ran."""
    lines = (project / "records.jsonl").read_text().splitlines()
    return [TestRecord.model_validate_json(line) for line in lines]
