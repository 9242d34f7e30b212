"""In CI a test that skips for a missing tool fails the run (tests/conftest.py).

Issue 9: the torch, xdist and git tests could all skip in CI without anyone
noticing. This runs a small suite with the suite's own conftest, with and
without ``TESTFLEET_REQUIRE_TOOLS=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[2] / "conftest.py"

SUITE = """
import pytest

def test_runs():
    pass

@pytest.mark.skipif(True, reason="needs a tool this machine lacks")
def test_needs_a_tool():
    pass

def test_imports_a_missing_module():
    pytest.importorskip("testfleet_no_such_module")

@pytest.mark.skipif(True, reason="only on macOS")
def test_elsewhere():
    pass
"""


def run_suite(
    tmp_path: Path, *, require: bool, suite: str = SUITE
) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_suite.py").write_text(suite)
    env = {k: v for k, v in os.environ.items() if k != "TESTFLEET_REQUIRE_TOOLS"}
    if require:
        env["TESTFLEET_REQUIRE_TOOLS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_tool_skip_is_a_skip_on_a_developer_machine(tmp_path: Path) -> None:
    done = run_suite(tmp_path, require=False)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 3 skipped" in done.stdout


def test_a_tool_skip_fails_the_run_in_ci_and_is_named(tmp_path: Path) -> None:
    done = run_suite(tmp_path, require=True)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "2 test(s) skipped for a missing tool" in done.stdout
    assert "test_suite.py::test_needs_a_tool: needs a tool this machine lacks" in done.stdout
    assert "test_suite.py::test_imports_a_missing_module: could not import" in done.stdout
    assert "test_elsewhere" not in done.stdout.split("skipped for a missing tool")[1]


def test_other_skips_pass_in_ci(tmp_path: Path) -> None:
    suite = SUITE.split('@pytest.mark.skipif(True, reason="needs')[0] + (
        "\n@pytest.mark.skipif(True, reason='only on macOS')\ndef test_elsewhere():\n    pass\n"
    )
    done = run_suite(tmp_path, require=True, suite=suite)
    assert done.returncode == 0, done.stdout
