"""The live log stream of a running attempt: coalescing, rate, skip markers (fake clock)."""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

import pytest

from testfleet.domain.enums import ResultStatus, TaskType
from testfleet.domain.result import decode_logs
from testfleet.domain.task import TaskSpec
from testfleet.protocol.messages import LogChunk
from testfleet.testing import FakeClock
from testfleet.worker.executors.base import ExecutionContext
from testfleet.worker.executors.command import CommandExecutor
from testfleet.worker.log_stream import LogCoalescer, LogLimits, LogStream, skip_marker


def test_writes_between_two_chunks_are_coalesced_into_one() -> None:
    coalescer = LogCoalescer(LogLimits(max_chunk_bytes=1024, chunks_per_second=4))
    coalescer.write(b"one\n")
    assert coalescer.take(100.0) == "one\n"
    coalescer.write(b"two\n")
    coalescer.write(b"three\n")
    assert coalescer.take(100.1) is None  # 0.25 s between chunks at 4/s
    assert coalescer.next_due() == pytest.approx(100.25)
    assert coalescer.take(100.25) == "two\nthree\n"
    assert coalescer.take(200.0) is None  # nothing pending
    assert coalescer.next_due() is None


def test_output_faster_than_the_rate_keeps_its_ends_and_marks_the_middle() -> None:
    coalescer = LogCoalescer(LogLimits(max_chunk_bytes=100, chunks_per_second=1))
    data = b"".join(f"{i:04d}\n".encode() for i in range(1000))  # 5,000 bytes
    for start in range(0, len(data), 37):
        coalescer.write(data[start : start + 37])
    chunk = coalescer.take(0.0)
    assert chunk is not None
    assert chunk.startswith(data[:50].decode())
    assert chunk.endswith(data[-50:].decode())
    assert skip_marker(4900) in chunk
    assert coalescer.skipped_total == 4900


def test_memory_stays_within_one_chunk_however_much_is_written() -> None:
    coalescer = LogCoalescer(LogLimits(max_chunk_bytes=64, chunks_per_second=1))
    coalescer.write(b"a")
    coalescer.take(0.0)
    for _ in range(10_000):
        coalescer.write(b"x" * 100)
    chunk = coalescer.take(1.0)
    assert chunk is not None
    assert len(chunk) <= 64 + len(skip_marker(10**6))


def test_a_character_split_between_writes_arrives_whole() -> None:
    coalescer = LogCoalescer()
    euro = "€".encode()
    coalescer.write(b"price " + euro[:1])
    assert coalescer.take(0.0) == "price "
    coalescer.write(euro[1:] + b"5\n")
    assert coalescer.take(1.0) == "€5\n"


def test_a_character_cut_by_a_skip_is_counted_as_skipped_not_shown_broken() -> None:
    coalescer = LogCoalescer(LogLimits(max_chunk_bytes=10, chunks_per_second=1))
    coalescer.write(b"ab" + "é".encode() * 30)
    chunk = coalescer.take(0.0)
    assert chunk is not None
    assert "\ufffd" not in chunk.split("]")[-1]
    assert chunk.endswith("é")


def test_flush_ignores_the_rate_at_the_end() -> None:
    coalescer = LogCoalescer(LogLimits(max_chunk_bytes=1024, chunks_per_second=1))
    coalescer.write(b"first\n")
    assert coalescer.take(0.0) == "first\n"
    coalescer.write(b"last\n")
    assert coalescer.take(0.5) is None
    assert coalescer.flush() == "last\n"
    assert coalescer.flush() is None


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="chunks_per_second"):
        LogLimits(chunks_per_second=0)
    with pytest.raises(ValueError, match="max_chunk_bytes"):
        LogLimits(max_chunk_bytes=0)


async def test_stream_sends_at_most_the_rate_on_the_clock_and_the_rest_at_close() -> None:
    clock = FakeClock()
    sent: list[tuple[float, LogChunk]] = []
    stream = LogStream(7, lambda c: sent.append((clock.now(), c)), clock, LogLimits(1024, 4.0))
    start = clock.now()
    for i in range(20):  # a line every 0.05 s for one second
        stream.write(f"line {i}\n".encode())
        clock.advance(0.05)
        await asyncio.sleep(0)
    assert all(chunk.attempt_id == 7 for _, chunk in sent)
    times = [t - start for t, _ in sent]
    assert len(sent) <= 5
    assert all(b - a >= 0.25 - 1e-9 for a, b in itertools.pairwise(times))
    stream.close()
    text = "".join(chunk.data for _, chunk in sent)
    assert text == "".join(f"line {i}\n" for i in range(20))
    stream.write(b"after close\n")  # ignored, never raises
    assert "after close" not in "".join(chunk.data for _, chunk in sent)


async def test_stream_sends_pending_output_once_the_interval_passes_without_new_writes() -> None:
    clock = FakeClock()
    sent: list[LogChunk] = []
    stream = LogStream(1, sent.append, clock, LogLimits(1024, 1.0))
    stream.write(b"a\n")
    stream.write(b"b\n")
    assert [c.data for c in sent] == ["a\n"]
    clock.advance(1.0)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [c.data for c in sent] == ["a\n", "b\n"]
    stream.close()
    assert len(sent) == 2


async def test_a_flood_is_cut_with_a_marker_and_never_blocks_the_writer() -> None:
    clock = FakeClock()
    sent: list[LogChunk] = []
    stream = LogStream(1, sent.append, clock, LogLimits(16 * 1024, 4.0))
    for _ in range(1000):
        stream.write(b"y" * 1024)  # 1 MB in no time at all
    stream.close()
    assert len(sent) == 2  # the first piece at once, the rest at close
    assert all(len(c.data.encode()) <= 16 * 1024 + 64 for c in sent)
    assert "bytes skipped" in sent[-1].data
    assert stream.skipped_total > 900_000


async def test_the_command_executor_hands_its_output_to_the_stream_as_it_runs(
    tmp_path: Path,
) -> None:
    seen: list[bytes] = []
    context = ExecutionContext(
        worker_id="w",
        attempt_id=1,
        attempt=1,
        cancel_event=asyncio.Event(),
        work_dir=tmp_path,
        report_output=seen.append,
    )
    script = (
        "import sys\nfor i in range(3): print('line', i, flush=True)\nprint('err', file=sys.stderr)"
    )
    task = TaskSpec(
        task_id="t", type=TaskType.COMMAND, config={"argv": [sys.executable, "-c", script]}
    )
    result = await CommandExecutor(memory_sample_interval_seconds=None).run(task, context)
    assert result.status is ResultStatus.COMPLETED
    streamed = b"".join(seen).decode()
    assert streamed == decode_logs(result.logs)  # the same bytes as the result's log
    assert "line 2" in streamed
    assert "err" in streamed
