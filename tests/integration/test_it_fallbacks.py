"""Requirement fallbacks end to end: a YAML task file submitted with ``testfleet submit``
to a real coordinator whose only worker has no GPU. The task asks for CUDA first and
accepts any worker after 2 s: it waits, falls back, runs, and ``testfleet task`` shows
the slice. A file whose fallbacks are out of order is refused, naming the field."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.integration]


def cli(fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testfleet", *args],
        capture_output=True,
        text=True,
        env=fleet.env(),
        cwd=fleet.root,
        timeout=90,
        check=False,
    )


@pytest.mark.timeout(120)
def test_a_task_file_with_a_fallback_waits_then_runs_on_the_fallback(fleet, tmp_path):
    fleet.start_coordinator()
    fleet.start_worker("cpu-only")
    tasks_file = tmp_path / "fallback.yaml"
    tasks_file.write_text(
        textwrap.dedent(
            """\
            - task_id: wants-cuda
              type: simulated
              config: {duration_seconds: 0.1}
              requirements: {hardware: [cuda]}
              fallbacks:
                - after_seconds: 2
                  requirements: {}
            """
        )
    )
    submitted = cli(fleet, "submit", str(tasks_file))
    assert submitted.returncode == 0, submitted.stderr
    waiting = fleet.task("wants-cuda")["task"]
    assert waiting["status"] == "queued"
    assert waiting["slice_index"] == 0
    assert waiting["unschedulable_reason"] is None  # a later slice fits the worker

    finished = fleet.wait_terminal(["wants-cuda"], timeout=60)["wants-cuda"]
    assert finished["status"] == "completed"
    assert finished["slice_index"] == 1
    shown = cli(fleet, "task", "wants-cuda", "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert [a["slice_index"] for a in detail["attempts"]] == [1]
    text = cli(fleet, "task", "wants-cuda")
    assert "requirement slice: 1 of 2" in text.stdout


def test_fallbacks_out_of_order_are_refused_naming_the_field(fleet, tmp_path):
    fleet.start_coordinator()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            - task_id: out-of-order
              type: simulated
              fallbacks:
                - {after_seconds: 600}
                - {after_seconds: 60}
            """
        )
    )
    done = cli(fleet, "submit", str(bad))
    assert done.returncode != 0
    assert "tasks[0].fallbacks[1].after_seconds" in done.stderr, done.stderr
    assert "must be greater than 600" in done.stderr, done.stderr
