"""Frames split by count and by size, so none is over the limit the coordinator enforces."""

from __future__ import annotations

from testfleet.domain.enums import ResultStatus
from testfleet.domain.result import SimulationStatus, TaskResult
from testfleet.protocol.codec import MAX_FRAME_BYTES, decode, encode
from testfleet.protocol.framing import FRAME_BUDGET_BYTES, split_by_size
from testfleet.protocol.messages import AttemptResult, Result


def test_runs_close_at_the_count_or_the_size_whichever_comes_first() -> None:
    sizes = [4, 4, 4, 9, 1, 1, 1, 1, 1]
    runs = list(split_by_size(sizes, lambda s: s, max_items=3, max_bytes=10))
    assert runs == [[4, 4], [4], [9, 1], [1, 1, 1], [1]]
    assert [x for run in runs for x in run] == sizes  # in order, nothing lost


def test_an_item_over_the_budget_goes_alone() -> None:
    assert list(split_by_size([1, 50, 1], lambda s: s, max_items=10, max_bytes=10)) == [
        [1],
        [50],
        [1],
    ]
    assert list(split_by_size([], lambda s: s, max_items=10)) == []


def test_results_with_big_logs_make_frames_the_coordinator_accepts() -> None:
    # 60 results of 1 MiB of logs each: 500 to a frame (the old count limit)
    # would have made a 60+ MiB frame, refused and resent forever.
    logs = "A" * (1024 * 1024)
    results = [
        AttemptResult(
            attempt_id=n + 1,
            result=TaskResult(
                task_id=f"t{n}",
                worker_id="w",
                status=ResultStatus.COMPLETED,
                execution_time_seconds=1.0,
                simulation_status=SimulationStatus(is_simulated=False),
                logs=logs,
            ),
        )
        for n in range(60)
    ]
    frames = [
        encode(Result(results=batch))
        for batch in split_by_size(results, lambda r: len(r.model_dump_json()), max_items=500)
    ]
    assert len(frames) == 2
    for frame in frames:
        assert len(frame) <= FRAME_BUDGET_BYTES + 4096 < MAX_FRAME_BYTES
        decode(frame)
