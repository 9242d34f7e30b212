"""``testfleet run`` reports what serial pytest reports, on suites nobody wrote for it.

Each test runs one suite twice in the same directory: plain serial pytest
(``python -m pytest``), then ``testfleet run`` against a real coordinator and
real workers (the ``fleet`` fixture). The two must agree on the final summary
line's counts, the ``-r`` lines, the JUnit XML (totals and each test case's
outcome) and the exit code. The fleet run must also have gone through the
fleet: its ``test`` tasks' first-pass chunks hold every collected node id
exactly once (see ``it_compare.py``; ``test_it_suite_shapes.py`` does the
same for subtests, strict configurations and ``pytest.exit``).

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

import textwrap
from pathlib import Path

import pytest
from it_compare import compare_serial_and_fleet, unpack
from it_fleet import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SDIST = Path(__file__).resolve().parents[1] / "data" / "sdists" / "six-1.17.0.tar.gz"


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
