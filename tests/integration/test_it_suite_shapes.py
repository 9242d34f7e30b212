"""``testfleet run`` reports what serial pytest reports, on suites shaped like the
issue's: subtests, configurations that make warnings errors, ``pytest.exit``.

Each test writes a small suite into tmp_path and runs it serially and with
``testfleet run`` on a real coordinator and workers
(:func:`it_compare.compare_serial_and_fleet`): the same summary counts, ``-r``
lines, JUnit totals and cases, and exit code.

* Subtests: ``unittest.TestCase.subTest`` and pytest's ``subtests`` fixture,
  passing, failing, skipped and xfailed, verbose (``N subtests passed``).
* A strict project: ``filterwarnings = error``, ``--strict-config``,
  ``-p no:timeout`` and ``-m`` in ``addopts``, a plugin registered by its
  conftest (a fixture, and an attribute on reports its own summary reads), a
  warning that fails its test, one ignored, one expected, strict xfail.
  Serially it passes where it should; through the fleet its sessions used to
  die at start ("Module already imported so cannot be rewritten").
* ``pytest.exit()`` in a suite's last test: the tests before it are reported,
  the run ends with pytest's ``Exit`` line and the exit code it asked for.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from it_compare import compare_serial_and_fleet
from it_fleet import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def write_suite(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


SUBTESTS = {
    # schemathesis (a development dependency of testfleet, so installed here)
    # registers a pytest plugin that drops the subtest context from pytest's
    # report lines ("SUBFAILED(i=1)" instead of "SUBFAILED[even] (i=1)"): the
    # fleet matches serial either way, but the shapes checked below are pytest's.
    "pytest.ini": """\
        [pytest]
        asyncio_default_fixture_loop_scope = function
        addopts = -p no:schemathesis
        """,
    "test_unittest_subtests.py": """\
        import unittest


        class TestSteps(unittest.TestCase):
            def test_all_pass(self):
                for i in range(5):
                    with self.subTest(i=i):
                        self.assertLess(i, 5)

            def test_two_fail(self):
                for i in range(6):
                    with self.subTest("even", i=i):
                        self.assertEqual(i % 3, 0)

            def test_skips_one(self):
                for i in range(3):
                    with self.subTest(i=i):
                        if i == 2:
                            self.skipTest("not two")
        """,
    "test_fixture_subtests.py": """\
        import pytest


        def test_mixed(subtests):
            for word in ["a", "b", "c"]:
                with subtests.test(msg="word", word=word):
                    print("checking", word)
                    assert word != "b"


        def test_skip_and_xfail(subtests):
            with subtests.test("skipping"):
                pytest.skip("later")
            with subtests.test("xfailing"):
                pytest.xfail("known")
            with subtests.test("fine"):
                pass


        @pytest.mark.parametrize("n", [1, 2])
        def test_parametrized(subtests, n):
            for i in range(n):
                with subtests.test(i=i):
                    assert i < 2


        def test_plain():
            pass
        """,
}


@pytest.mark.timeout(300)
def test_subtests_match_serial_pytest(fleet: Fleet, tmp_path: Path):
    project = write_suite(tmp_path / "subtests", SUBTESTS)

    serial, _ = compare_serial_and_fleet(fleet, project, ["sub-a", "sub-b"], ["-rA", "-v"])

    # Sanity: the suite has the shapes it was written for.
    assert serial.counts is not None
    assert serial.counts["subtests passed"] >= 10, serial.counts
    assert serial.counts["failed"] >= 4, serial.counts
    assert serial.returncode == 1
    assert any(line.startswith("SUBFAILED[even] (i=1)") for line in serial.short_summary())


STRICT = {
    "pyproject.toml": """\
        [tool.pytest.ini_options]
        addopts = "--strict-config --strict-markers -m 'not slow' -p no:timeout"
        filterwarnings = ["error", "ignore:this one is fine:UserWarning"]
        markers = ["slow: left out by addopts"]
        asyncio_default_fixture_loop_scope = "function"
        """,
    "conftest.py": """\
        pytest_plugins = ["suite_plugin"]
        """,
    "suite_plugin.py": """\
        import pytest


        @pytest.fixture
        def greeting():
            return "hello"


        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_makereport(item, call):
            report = yield
            report.suite_note = f"{item.name}:{call.when}"
            return report


        def pytest_terminal_summary(terminalreporter):
            notes = sorted(
                r.suite_note
                for reports in terminalreporter.stats.values()
                for r in reports
                if hasattr(r, "suite_note")
            )
            terminalreporter.write_line(f"SUITE NOTES {len(notes)} " + " ".join(notes))
        """,
    "tests/test_strict.py": """\
        import warnings

        import pytest


        def test_uses_the_plugins_fixture(greeting):
            assert greeting == "hello"


        def test_sees_its_own_plugins_only(request):
            assert not request.config.pluginmanager.hasplugin("timeout")


        @pytest.mark.slow
        def test_left_out_by_addopts():
            raise AssertionError("-m 'not slow' in addopts leaves this out")


        def test_an_ignored_warning():
            warnings.warn("this one is fine", UserWarning)


        def test_an_expected_warning():
            with pytest.warns(DeprecationWarning, match="old"):
                warnings.warn("old", DeprecationWarning)


        def test_a_warning_is_an_error_here():
            warnings.warn("not allowed", UserWarning)


        def test_prints():
            print("output of a passing test")


        @pytest.mark.xfail(strict=True, reason="must fail")
        def test_xpass_strict():
            pass
        """,
}


@pytest.mark.timeout(300)
def test_a_strict_project_matches_serial_pytest(fleet: Fleet, tmp_path: Path):
    project = write_suite(tmp_path / "strict", STRICT)

    serial, fleet_run = compare_serial_and_fleet(fleet, project, ["strict-a", "strict-b"], ["-rA"])

    assert serial.counts == {"passed": 5, "failed": 2, "deselected": 1}, serial.describe("serial")
    # The plugin's own summary reads an attribute it set on every report:
    # the fleet's reports carry it.
    assert serial.lines_starting("SUITE NOTES 21 ")
    assert fleet_run.lines_starting("SUITE NOTES") == serial.lines_starting("SUITE NOTES")


EXITS = {
    "pytest.ini": """\
        [pytest]
        """,
    "test_a_work.py": """\
        import pytest


        @pytest.mark.parametrize("n", range(6))
        def test_work(n):
            assert n >= 0


        def test_fails():
            assert 1 == 2
        """,
    "test_z_stop.py": """\
        import pytest


        def test_stops_everything():
            pytest.exit("stopping the run here", returncode=3)
        """,
}


@pytest.mark.timeout(300)
def test_pytest_exit_in_a_test_matches_serial_pytest(fleet: Fleet, tmp_path: Path):
    project = write_suite(tmp_path / "exits", EXITS)

    serial, fleet_run = compare_serial_and_fleet(fleet, project, ["exit-a", "exit-b"], ["-rf"])

    assert serial.returncode == 3, serial.describe("serial")
    assert serial.counts == {"passed": 6, "failed": 1}
    stop_line = "_pytest.outcomes.Exit: stopping the run here"
    assert any(stop_line in line for line in serial.output.splitlines())
    assert any(stop_line in line for line in fleet_run.output.splitlines())
