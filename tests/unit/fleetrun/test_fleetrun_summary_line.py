"""The reader of pytest's summary line, on the lines pytest writes."""

from __future__ import annotations

from testfleet.fleetrun.summary_line import summary_counts


def test_counts_are_read_from_the_last_summary_line() -> None:
    assert summary_counts(
        "x\n===== 398 passed, 2 failed, 1 error, 3 warnings in 2.71s (0:00:02) =====\n"
    ) == {"passed": 398, "failed": 2, "errors": 1, "warnings": 3}
    assert summary_counts("198 passed, 2 skipped in 0.46s\n") == {"passed": 198, "skipped": 2}
    assert summary_counts("= 1 passed in 0.1s =\n= 2 failed, 2 errors in 0.2s =") == {
        "failed": 2,
        "errors": 2,
    }


def test_no_tests_ran_is_empty_and_no_summary_is_none() -> None:
    assert summary_counts("=== no tests ran in 0.01s ===") == {}
    assert summary_counts("FAILED t.py::test_x - assert 1 in 2.0s") is None
    assert summary_counts("") is None


def test_colour_codes_are_ignored() -> None:
    line = "\x1b[31m\x1b[1m1 failed\x1b[0m, \x1b[32m3 passed\x1b[0m\x1b[31m in 0.12s\x1b[0m"
    assert summary_counts(line) == {"failed": 1, "passed": 3}
