"""Traces: generated from a seed, written and read back as JSON lines, and
refused with a message naming the line and field when they are wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from testfleet.domain.enums import HardwareKind
from testfleet.simulation import Simulator, Trace, TraceError, generate_trace, load_trace
from testfleet.simulation.trace import TraceTask, TraceWorker, dump_trace


def test_a_generated_trace_mixes_cpu_and_gpu_workers_and_work() -> None:
    trace = generate_trace(50, 500, seed=3)
    assert len(trace.workers) == 50
    assert len(trace.tasks) == 500
    classes = {w.hardware_class for w in trace.workers}
    assert classes == {HardwareKind.CPU, HardwareKind.CUDA}
    needs_gpu = [t for t in trace.tasks if HardwareKind.CUDA in t.requirements.hardware]
    assert 0 < len(needs_gpu) < len(trace.tasks)
    times = [t.submit_time for t in trace.tasks]
    assert times == sorted(times)
    assert times[-1] > 0
    assert generate_trace(50, 500, seed=3) == trace


def test_generator_refuses_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="workers"):
        generate_trace(0, 10, seed=1)
    with pytest.raises(ValueError, match="tasks"):
        generate_trace(1, -1, seed=1)
    with pytest.raises(ValueError, match="load"):
        generate_trace(1, 1, seed=1, load=0)


def test_a_trace_written_and_read_back_replays_to_the_same_figures(tmp_path: Path) -> None:
    trace = generate_trace(10, 100, seed=5)
    path = tmp_path / "trace.jsonl"
    dump_trace(trace, path)
    loaded = load_trace(path)
    assert loaded == trace
    first = Simulator(trace).run()
    again = Simulator(loaded).run()
    assert dataclasses.replace(first, wall_seconds=0, policy_seconds=0) == dataclasses.replace(
        again, wall_seconds=0, policy_seconds=0
    )


def test_a_hand_written_trace_loads_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"kind": "worker", "worker_id": "w1"}\n'
        "\n"
        '{"kind": "task", "task_id": "b", "submit_time": 2, "durations": {"cpu": 1}}\n'
        '{"kind": "task", "task_id": "a", "submit_time": 2, "durations": {"cpu": 1}}\n'
    )
    trace = load_trace(path)
    assert trace.workers == (TraceWorker(worker_id="w1"),)
    assert [t.task_id for t in trace.tasks] == ["a", "b"]  # by time, then id


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ('{"kind": "worker", "worker_id": "w", "slots": 0}', r"t.jsonl:1: field 'slots'"),
        ('{"kind": "robot"}', r"t.jsonl:1: field 'kind'"),
        ('{"worker_id": "w"}', r"t.jsonl:1: field 'kind'"),
        ("[1, 2]", r"t.jsonl:1: field 'kind'"),
        ("{not json", r"t.jsonl:1: not JSON"),
        (
            '{"kind": "worker", "worker_id": "w"}\n{"kind": "task", "task_id": "t"}',
            r"t.jsonl:2: field 'durations'",
        ),
        (
            '{"kind": "worker", "worker_id": "w"}\n{"kind": "worker", "worker_id": "w"}',
            r"worker_id 'w' appears twice",
        ),
        ('{"kind": "task", "task_id": "t", "durations": {"cpu": 1}}', r"no workers"),
    ],
)
def test_a_bad_trace_is_refused_naming_the_line_and_field(
    tmp_path: Path, lines: str, expected: str
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(lines + "\n")
    with pytest.raises(TraceError, match=expected):
        load_trace(path)


def test_a_missing_trace_file_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"cannot read trace .*missing\.jsonl"):
        load_trace(tmp_path / "missing.jsonl")


def test_duplicate_task_ids_are_refused() -> None:
    task = TraceTask(task_id="t", durations={HardwareKind.CPU: 1.0})
    with pytest.raises(TraceError, match="task_id 't' appears twice"):
        Trace.of([TraceWorker(worker_id="w")], [task, task])
