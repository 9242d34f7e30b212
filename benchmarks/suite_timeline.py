"""Where one ``testfleet run``'s wall time went, from the run's own records.

Called by benchmarks/suite.py's ``--timeline`` after each fleet run (and by
tests/unit/fleetrun/test_suite_timeline.py through that module): the
coordinator's tasks, attempts and test rows, read through ``POST /sql``, as
milestones and a split of workers x wall. Kept apart from suite.py, which
times the peers, so each stays one concept.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from testfleet.local_fleet import LocalFleet


@dataclass
class Attempt:
    """One try of a chunk, from the coordinator's records (epoch seconds)."""

    task_id: str
    worker_id: str
    assigned: float
    accepted: float | None
    ended: float | None
    #: Sum of the durations its tests reported (what pytest timed).
    test_seconds: float = 0.0


@dataclass
class Timeline:
    """Where one ``testfleet run``'s wall time went, from its own records.

    ``worker_seconds`` splits workers x wall (client start to exit) into what
    each worker did: ``before first chunk`` (client start-up, collection,
    warm-up, until the worker accepted its first chunk), ``tests`` (the tests'
    own durations), ``in chunk`` (a chunk's time beyond its tests: session,
    collection of its modules, reporting), ``between chunks`` (a result's end
    to the next chunk's acceptance on the same worker), ``tail`` (idle after its
    last chunk while others still ran) and ``after last chunk`` (the last result
    to the client's exit). ``marks`` are the run's milestones, seconds after
    the client started.
    """

    wall: float
    marks: dict[str, float]
    worker_seconds: dict[str, float]
    chunks: int
    median_gap: float | None


def build_timeline(
    client_start: float,
    client_end: float,
    collected: float | None,
    created: dict[str, float],
    attempts: Sequence[Attempt],
    workers: Sequence[str],
) -> Timeline:
    """The breakdown of one run (pure: the caller read the records).

    ``created`` maps every task of the run (warm-ups included, their ids hold
    ``.warm.``) to its submission time; ``attempts`` are the chunk attempts
    (warm-ups left out), ``workers`` every worker that could take a chunk.
    """
    chunk_tasks = [t for t in created if ".warm." not in t]
    marks: dict[str, float] = {}

    def mark(label: str, value: float | None) -> None:
        if value is not None:
            marks[label] = value - client_start

    mark("first submission (warm-ups)", min(created.values(), default=None))
    mark("collection done", collected)
    mark("first chunk submitted", min((created[t] for t in chunk_tasks), default=None))
    mark("first chunk assigned", min((a.assigned for a in attempts), default=None))
    accepted = [a.accepted for a in attempts if a.accepted is not None]
    ends = [a.ended for a in attempts if a.ended is not None]
    mark("first chunk accepted", min(accepted, default=None))
    mark("last chunk ended", max(ends, default=None))
    wall = client_end - client_start
    marks["client exit"] = wall
    last_end = max(ends, default=client_end)
    parts = dict.fromkeys(
        ("before first chunk", "tests", "in chunk", "between chunks", "tail", "after last chunk"),
        0.0,
    )
    gaps: list[float] = []
    for worker in workers:
        mine = sorted(
            (a for a in attempts if a.worker_id == worker and a.accepted is not None),
            key=lambda a: a.assigned,
        )
        if not mine:
            parts["before first chunk"] += last_end - client_start
            parts["after last chunk"] += client_end - last_end
            continue
        first = mine[0].accepted or mine[0].assigned
        parts["before first chunk"] += first - client_start
        previous_end: float | None = None
        for attempt in mine:
            start = attempt.accepted or attempt.assigned
            end = attempt.ended if attempt.ended is not None else last_end
            if previous_end is not None:
                gap = max(0.0, start - previous_end)
                parts["between chunks"] += gap
                gaps.append(gap)
            tests = min(attempt.test_seconds, end - start)
            parts["tests"] += tests
            parts["in chunk"] += end - start - tests
            previous_end = end
        parts["tail"] += last_end - (previous_end or last_end)
        parts["after last chunk"] += client_end - last_end
    return Timeline(
        wall=wall,
        marks=marks,
        worker_seconds=parts,
        chunks=len(chunk_tasks),
        median_gap=statistics.median(gaps) if gaps else None,
    )


def median_timeline(timelines: Sequence[Timeline]) -> Timeline:
    """Each figure's median over several runs' timelines."""

    def median_of(values: list[float]) -> float:
        return statistics.median(values)

    marks = {
        name: median_of([t.marks[name] for t in timelines if name in t.marks])
        for name in timelines[0].marks
    }
    parts = {
        name: median_of([t.worker_seconds[name] for t in timelines])
        for name in timelines[0].worker_seconds
    }
    gaps = [t.median_gap for t in timelines if t.median_gap is not None]
    return Timeline(
        wall=median_of([t.wall for t in timelines]),
        marks=marks,
        worker_seconds=parts,
        chunks=round(median_of([float(t.chunks) for t in timelines])),
        median_gap=median_of(gaps) if gaps else None,
    )


def read_timeline(
    fleet: LocalFleet, run_id: str, started: float, ended: float, collected: float | None
) -> Timeline:
    """The run's tasks, attempts and test durations from the coordinator's
    database (``POST /sql``), as a :class:`Timeline`."""
    like = f"{run_id}.%"
    tasks = fleet.client.sql(
        "SELECT task_id, epoch_us(create_time) / 1e6 FROM distributed_tasks "
        f"WHERE task_id LIKE '{like}'",
        max_rows=100_000,
    )["rows"]
    rows = fleet.client.sql(
        "SELECT h.task_id, h.worker_id, epoch_us(h.start_time) / 1e6, "
        "epoch_us(h.accepted_time) / 1e6, epoch_us(h.end_time) / 1e6, "
        "(SELECT coalesce(sum(r.duration_seconds), 0) FROM test_results r "
        " WHERE r.task_id = h.task_id AND r.attempt_id = h.id) "
        f"FROM task_execution_history h WHERE h.task_id LIKE '{like}' "
        f"AND h.task_id NOT LIKE '{run_id}.warm.%'",
        max_rows=100_000,
    )["rows"]
    workers = [w["worker_id"] for w in fleet.client.workers() if w["connected"]]
    attempts = [Attempt(r[0], r[1], r[2], r[3], r[4], float(r[5])) for r in rows]
    created = {str(r[0]): float(r[1]) for r in tasks}
    return build_timeline(started, ended, collected, created, attempts, workers)


def print_timeline(label: str, timeline: Timeline, workers: int) -> None:
    """Print one run's timeline: milestones, then workers x wall split by use."""
    marks = ", ".join(f"{name} {seconds:.2f}" for name, seconds in timeline.marks.items())
    print(f"    timeline of {label} ({timeline.chunks} chunks), s after client start: {marks}")
    total = workers * timeline.wall
    split = ", ".join(
        f"{name} {seconds:.2f} ({seconds / total:.0%})"
        for name, seconds in timeline.worker_seconds.items()
    )
    gap = (
        f"; median gap between chunks {timeline.median_gap * 1000:.0f} ms"
        if (timeline.median_gap is not None)
        else ""
    )
    print(f"    {workers} workers x {timeline.wall:.2f} s = {total:.2f} worker-s: {split}{gap}")
