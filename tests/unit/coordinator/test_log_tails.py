"""Live log tails on the coordinator: bounds, resume by seq, eviction, and the
state feeding them only from the worker that holds the attempt (fake clock)."""

from __future__ import annotations

from test_coordinator_state import Harness, assigned, result, spec

from testfleet.coordinator.events import Tick, WorkerFrame
from testfleet.coordinator.log_tails import (
    LogTails,
    attempt_separator,
    cut_marker,
    dropped_marker,
)
from testfleet.protocol.messages import Accept, AttemptResult, LogChunk, Reject, Result


def test_readers_resume_after_the_seq_they_hold() -> None:
    tails = LogTails()
    for i in range(3):
        tails.add(1, "t", "w", f"line {i}\n", 10.0 + i)
    first = tails.read(1)
    assert first is not None
    assert [c.data for c in first.chunks] == ["line 0\n", "line 1\n", "line 2\n"]
    assert first.next_after == first.chunks[-1].seq
    tails.add(1, "t", "w", "line 3\n", 13.0)
    later = tails.read(1, after=first.next_after)
    assert later is not None
    assert [c.data for c in later.chunks] == ["line 3\n"]
    caught_up = tails.read(1, after=later.next_after)
    assert caught_up is not None
    assert caught_up.chunks == ()
    assert caught_up.next_after == later.next_after
    assert not caught_up.missed


def test_seqs_grow_across_attempts_so_a_retry_follows_on() -> None:
    tails = LogTails()
    tails.add(1, "t", "w", "attempt one\n", 0.0)
    seen = tails.read(1)
    assert seen is not None
    tails.add(2, "t", "w2", "attempt two\n", 1.0)
    retry = tails.read(2, after=seen.next_after)
    assert retry is not None
    assert [c.data for c in retry.chunks] == ["attempt two\n"]


def test_a_seq_from_before_a_restart_reads_from_the_start() -> None:
    tails = LogTails()
    tails.add(1, "t", "w", "fresh\n", 0.0)
    read = tails.read(1, after=9_999)
    assert read is not None
    assert [c.data for c in read.chunks] == ["fresh\n"]


def test_each_tail_keeps_its_last_bytes_and_says_when_a_reader_missed_some() -> None:
    tails = LogTails(tail_bytes=100, max_bytes_per_second=10**9)
    for i in range(50):
        tails.add(1, "t", "w", f"{i:09d}\n", float(i))  # 10 bytes each
    read = tails.read(1)
    assert read is not None
    assert sum(len(c.data) for c in read.chunks) <= 100
    assert read.chunks[-1].data == "000000049\n"
    assert read.missed
    recent = tails.read(1, after=read.chunks[0].seq)
    assert recent is not None
    assert not recent.missed


def test_a_flooding_attempt_is_cut_per_second_and_told_how_much() -> None:
    tails = LogTails(max_bytes_per_second=1000, max_chunk_bytes=1000)
    for _ in range(5):
        tails.add(1, "t", "w", "x" * 400, 0.0)  # 2,000 bytes in one second
    tails.add(1, "t", "w", "next second\n", 1.0)
    read = tails.read(1)
    assert read is not None
    assert [len(c.data) for c in read.chunks[:2]] == [400, 400]
    assert read.chunks[-1].data == dropped_marker(1200) + "next second\n"
    assert tails.dropped_bytes == 1200


def test_a_chunk_longer_than_allowed_keeps_its_end() -> None:
    tails = LogTails(max_chunk_bytes=10)
    tails.add(1, "t", "w", "0123456789abcdef", 0.0)
    read = tails.read(1)
    assert read is not None
    assert read.chunks[0].data == cut_marker(6) + "6789abcdef"


def test_finished_tails_are_kept_a_while_then_dropped() -> None:
    tails = LogTails(finished_retention_seconds=60)
    tails.add(1, "t", "w", "done\n", 0.0)
    tails.add(2, "u", "w", "running\n", 0.0)
    tails.sweep({2}, 10.0)
    finished = tails.read(1)
    assert finished is not None
    assert finished.finished
    assert [c.data for c in finished.chunks] == ["done\n"]
    tails.sweep({2}, 69.0)
    assert tails.read(1) is not None
    tails.sweep({2}, 70.0)
    assert tails.read(1) is None
    still = tails.read(2)
    assert still is not None
    assert not still.finished


def test_at_most_max_attempts_tails_finished_ones_evicted_first() -> None:
    tails = LogTails(max_attempts=3)
    for attempt in (1, 2, 3):
        tails.add(attempt, "t", "w", "x\n", 0.0)
    tails.sweep({1, 3}, 1.0)  # attempt 2 finished
    tails.add(4, "t", "w", "x\n", 2.0)
    assert tails.read(2) is None
    assert len(tails) == 3
    tails.add(1, "t", "w", "again\n", 3.0)  # 1 is now the most recently written
    tails.add(5, "t", "w", "x\n", 4.0)  # none finished: the least recently written goes
    assert tails.read(3) is None
    assert tails.read(1) is not None
    assert len(tails) == 3


def _running(h: Harness) -> int:
    h.submit(spec("a", type="command", config={"argv": ["true"]}))
    h.connect(1, "w1")
    h.connect(2, "w2")
    _, attempt_id = assigned(h.effects[-2])["a"]
    h.turn(WorkerFrame(1, Accept(attempt_ids=[attempt_id])))
    return attempt_id


def test_the_state_keeps_chunks_of_open_attempts_from_their_own_worker_only() -> None:
    h = Harness()
    attempt_id = _running(h)
    h.turn(WorkerFrame(1, LogChunk(attempt_id=attempt_id, data="mine\n")))
    h.turn(WorkerFrame(2, LogChunk(attempt_id=attempt_id, data="not yours\n")))
    h.turn(WorkerFrame(1, LogChunk(attempt_id=attempt_id + 100, data="no such attempt\n")))
    read = h.state.log_tails.read(attempt_id)
    assert read is not None
    assert [c.data for c in read.chunks] == ["mine\n"]
    assert read.task_id == "a"
    assert h.state.log_tails.ignored_chunks == 2
    # Chunks change nothing that is committed.
    assert not h.effects[-1].batch.tasks


def test_the_state_marks_a_tail_finished_when_its_attempt_closes() -> None:
    h = Harness()
    attempt_id = _running(h)
    h.turn(WorkerFrame(1, LogChunk(attempt_id=attempt_id, data="last line\n")))
    done = AttemptResult(
        attempt_id=attempt_id, started_at=0.0, finished_at=1.0, result=result("a", "w1")
    )
    h.turn(WorkerFrame(1, Result(results=[done])))
    h.turn(WorkerFrame(1, LogChunk(attempt_id=attempt_id, data="too late\n")))
    h.clock.advance(1.0)
    h.turn(Tick())
    read = h.state.log_tails.read(attempt_id)
    assert read is not None
    assert read.finished
    assert [c.data for c in read.chunks] == ["last line\n"]


def test_a_retrys_tail_starts_with_a_separator_naming_the_attempt_and_worker() -> None:
    tails = LogTails()
    tails.add(1, "t", "w-1", "first try\n", 0.0)
    seen = tails.read(1)
    assert seen is not None
    tails.add(7, "t", "w-2", "second try\n", 1.0, attempt=2)
    retry = tails.read(7, after=seen.next_after)
    assert retry is not None
    assert [c.data for c in retry.chunks] == [
        attempt_separator(2, "w-2"),
        "second try\n",
    ]
    assert attempt_separator(2, "w-2") == "── attempt 2 on worker w-2 ──\n"
    # A first attempt has none.
    assert [c.data for c in seen.chunks] == ["first try\n"]


def test_the_separator_goes_on_its_own_line_after_output_that_ended_mid_line() -> None:
    tails = LogTails()
    tails.add(1, "t", "w-1", "no newline at the end", 0.0)
    tails.add(2, "other", "w-1", "another task's output", 0.5)
    tails.add(3, "t", "w-2", "again\n", 1.0, attempt=2)
    retry = tails.read(3)
    assert retry is not None
    assert retry.chunks[0].data == "\n" + attempt_separator(2, "w-2")
    # Another task's mid-line output is no reason for a blank line.
    tails.add(4, "other", "w-3", "x\n", 2.0, attempt=3)
    third = tails.read(4)
    assert third is not None
    assert third.chunks[0].data == "\n" + attempt_separator(3, "w-3")
    tails.add(5, "fresh", "w-3", "y\n", 2.0, attempt=2)  # its first attempt's tail is gone
    gone = tails.read(5)
    assert gone is not None
    assert gone.chunks[0].data == attempt_separator(2, "w-3")


def test_the_state_opens_a_retried_attempts_tail_with_the_separator() -> None:
    h = Harness()
    first = _running(h)
    h.turn(WorkerFrame(1, LogChunk(attempt_id=first, data="try one\n")))
    h.turn(WorkerFrame(1, Reject(attempt_id=first, reason="busy")))
    h.clock.advance(1.0)
    h.turn(Tick())
    connection, second = next(
        assigned(effect)["a"]
        for effect in h.effects
        if "a" in assigned(effect) and assigned(effect)["a"][1] != first
    )
    worker = h.state.open_attempts[second].worker_id
    h.turn(WorkerFrame(connection, Accept(attempt_ids=[second])))
    h.turn(WorkerFrame(connection, LogChunk(attempt_id=second, data="try two\n")))
    read = h.state.log_tails.read(second)
    assert read is not None
    assert [c.data for c in read.chunks] == [attempt_separator(2, worker), "try two\n"]
