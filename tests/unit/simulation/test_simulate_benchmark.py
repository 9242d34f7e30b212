"""benchmarks/simulate.py as a user runs it: a small generated trace printed
with every figure, the same trace saved and replayed to the same figures, and
bad input refused with a line saying why and exit code 2 (no traceback)."""

from __future__ import annotations

from pathlib import Path

from simulate_script import simulate


def figures(output: str) -> dict[str, str]:
    """The lines that depend only on the trace (not wall time), by label."""
    rows = {}
    for line in output.splitlines():
        label, _, value = line.partition("  ")
        if label in ("tasks completed", "makespan", "queue wait p50 / p99", "utilisation"):
            rows[label] = value.strip()
    return rows


def test_a_small_trace_prints_every_figure_and_replays_to_the_same(tmp_path: Path) -> None:
    saved = tmp_path / "trace.jsonl"
    first = simulate("--workers", "20", "--tasks", "200", "--seed", "3", "--save-trace", str(saved))
    assert first.returncode == 0, first.stderr
    for label in ("makespan", "queue wait p50 / p99", "utilisation", "decisions per second"):
        assert label in first.stdout, label
    assert "200 (0 left queued)" in first.stdout
    replay = simulate("--trace", str(saved))
    assert replay.returncode == 0, replay.stderr
    assert figures(replay.stdout) == figures(first.stdout)
    assert len(figures(first.stdout)) == 4


def test_bad_input_says_why_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "worker", "worker_id": "w", "hardware": ["cpu"], "speed": -1}\n')
    for args in (("--trace", str(bad)), ("--turn-seconds", "-1")):
        done = simulate(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        # The last line says what is wrong (argparse puts its usage above it).
        assert done.stderr.strip().splitlines()[-1].startswith("simulate"), done.stderr
    assert "speed" in simulate("--trace", str(bad)).stderr  # names the field


def test_the_tuned_garbage_collector_changes_no_figure() -> None:
    # tune_gc freezes what survives older collections: memory bookkeeping only.
    args = ("--workers", "30", "--tasks", "600", "--seed", "5")
    tuned, default = simulate(*args), simulate(*args, "--default-gc")
    assert tuned.returncode == 0, tuned.stderr
    assert default.returncode == 0, default.stderr
    assert "garbage collector     tuned" in tuned.stdout
    assert "garbage collector     default" in default.stdout
    assert figures(tuned.stdout) == figures(default.stdout)
    assert len(figures(tuned.stdout)) == 4
