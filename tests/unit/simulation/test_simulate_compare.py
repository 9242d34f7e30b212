"""benchmarks/simulate.py --compare and --policy as a user runs them: both policies on
one trace, side by side; a bad policy or history refused naming the option (exit 2)."""

from __future__ import annotations

from simulate_script import simulate


def test_compare_prints_each_policy_and_a_table_of_both() -> None:
    done = simulate(
        "--workers", "20", "--tasks", "300", "--seed", "2", "--works", "20", "--history", "5",
        "--compare",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "policy                best-fit" in done.stdout
    assert "policy                estimated-finish" in done.stdout
    assert "history               100 past runs" in done.stdout
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| policy | makespan s | wait p50 s | wait p99 s | util cpu |")
    assert [row.split(" | ")[0] for row in table[1:]] == ["| best-fit", "| estimated-finish"]
    assert table[1].endswith("| 1.000 |")


def test_one_policy_by_name() -> None:
    done = simulate("--workers", "5", "--tasks", "20", "--policy", "estimated-finish")
    assert done.returncode == 0, done.stderr
    assert "policy                estimated-finish" in done.stdout
    assert "| policy |" not in done.stdout


def test_bad_options_are_refused_naming_them() -> None:
    bad = simulate("--policy", "fastest")
    assert bad.returncode == 2
    assert "--policy" in bad.stderr
    assert "best-fit" in bad.stderr
    negative = simulate("--workers", "5", "--tasks", "5", "--history", "-1")
    assert negative.returncode == 2
    assert "--history must be 0 or more" in negative.stderr
    works = simulate("--workers", "5", "--tasks", "5", "--works", "-3")
    assert works.returncode == 2
    assert "works must be 0 or more" in works.stderr
