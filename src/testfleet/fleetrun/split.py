"""Splitting a collected suite into chunks, one ``test`` task each.

``testfleet run`` and ``pytest --fleet`` call :func:`split_suite` after
collecting locally; each :class:`Chunk` becomes a task whose priority comes
from its position in the list (first = handed out first). Workers pull chunks
as they free up, so the split has to balance the finish without knowing which
machine takes what, or how fast it is.

With history (per-test durations from earlier runs of the same project), the
tests are sorted longest first and cut by *factoring*, the batched form of
guided self-scheduling:

* tests without history get the median of the known durations;
* chunks are made in batches of ``workers``; every chunk of a batch gets the
  budget ``remaining work / (FACTOR x workers)`` (remaining at the start of
  the batch), never below ``min_chunk_seconds``. With FACTOR = 2 each batch
  covers half of what is left, so the first chunks hold 1/(2W) of the suite
  each and the chunks halve batch by batch down to the floor, where many
  small chunks even out the finish: no worker is left with much more than
  one small chunk when the others run dry, and a slow machine that took a
  first chunk holds only 1/(2W) of the work (with one machine three times
  slower than the rest, the run still ends within 1.5x its ideal time);
* a chunk starts with the longest test left (an empty chunk always takes
  one, so a test longer than the budget is a chunk of its own) and fills its
  budget from that test's module first, longest first, then from the next
  longest test's module: longest first puts the tests that cannot be split
  at the start, where there is time to run them alongside everything else,
  and keeping a module's tests together matters because a worker's session
  collects only the modules its chunks need. On the 400-test, 20-module suite
  of the tests a module's tests were spread over up to 18 of 44 chunks when
  chunks took tests in plain duration order (so every worker collected
  nearly every module); filled by module they are in at most 5, with the
  same simulated finish;
* the number of chunks is capped at ``max_chunks_per_worker x workers`` (16
  each): every chunk costs a dispatch and a result round trip, so the floor
  rises until the cap holds.

The numbers trade per-chunk overhead against balance. A simulation in the
tests (list scheduling a seeded 400-test lognormal suite, median 20 ms, about
16 s in all, on W identical workers with 20 ms overhead per chunk) ends
within 2 %, 6 % and 10 % of the ideal ``max(total / W, longest test)`` for
W = 2, 4 and 8 over 20 seeds; with W = 16 each worker gets about a second of
work and the overhead shows (17 %). Plain guided self-scheduling (a new
budget for every chunk, remaining / (k x W)) with k = 2 made about 25 % more
chunks for the same robustness and finished 2-3 points later; k = 1 is leaner
but lets one slow machine take 1/W of the suite in its first chunk. A factor
of 1.5 is about a point faster on identical machines but gives a slow
machine a third more work in its first chunk. The
floor of 0.1 s keeps a tail chunk worth a few dispatches; 0.05 s was no
better and 0.2 s worse.

Worker speed (issue 14 asked for faster workers to get bigger chunks) is not
used, on measurement: chunks go to whichever worker frees up first, and the
split cannot say which one that is. Sizing each batch's chunks by the
workers' speed factors (largest first) made the simulation below finish
later, not sooner: with one worker three times faster than seven others,
1.22x the speed-weighted ideal against 1.13x for plain factoring (1.49x
against 1.13x when the slow workers take the first chunks), and 1.49-1.98x
against 1.12x with a four-times-faster one among four; equal chunks for
``sum of speeds / slowest speed`` workers were no better than plain
factoring either (1.11-1.17x against 1.08-1.14x). Factoring's shrinking
chunks already let fast machines take more of them: plain factoring stays
within 1.2x of the speed-weighted ideal for those fleets (a test keeps it so).

Without any history (a project's first run), durations are unknown, so the
tests are split by count in collection order (which keeps a module's tests
together, so module and class fixtures are set up once per chunk rather than
once per test) into about ``chunks_per_worker x workers`` (4 each)
chunks of equal size. More chunks than workers still lets fast machines take
more of them.

Tests with different ``hardware`` never share a chunk: each group is split on
its own (with the same ``workers``, since the client does not know how many
machines have that hardware) and the groups' chunks are interleaved by
progress (each group's first chunk first, then whichever group has handed
out the smallest share of its work), keeping each group's own order, so no
group waits behind another's.

Everything here is pure and deterministic: the same suite and history give
the same chunks.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: Factoring's x: each batch of ``workers`` chunks covers 1/x of the remaining work.
FACTOR = 2.0
#: A chunk's budget never goes below this (seconds of estimated work).
MIN_CHUNK_SECONDS = 0.1
#: At most this many chunks per worker (per hardware group).
MAX_CHUNKS_PER_WORKER = 16
#: Without history: about this many equal-count chunks per worker.
CHUNKS_PER_WORKER = 4


@dataclass(frozen=True)
class SuiteTest:
    """One collected test: its node id, its expected duration from earlier runs
    (None without history) and the hardware its ``@pytest.mark.fleet(hardware=...)``
    marker asks for (empty: any worker)."""

    __test__ = False  # not a pytest test class, despite the name

    nodeid: str
    estimated_seconds: float | None
    hardware: tuple[str, ...] = ()


@dataclass(frozen=True)
class Chunk:
    """Node ids that run together as one task, in the order they run.

    ``estimated_seconds`` is the sum of the tests' estimates (0.0 when the
    suite had no history); ``hardware`` is what every test in it needs.
    """

    node_ids: list[str]
    estimated_seconds: float
    hardware: tuple[str, ...]


def split_suite(
    tests: Sequence[SuiteTest],
    workers: int,
    *,
    min_chunk_seconds: float = MIN_CHUNK_SECONDS,
    factor: float = FACTOR,
    max_chunks_per_worker: int = MAX_CHUNKS_PER_WORKER,
    chunks_per_worker: int = CHUNKS_PER_WORKER,
) -> list[Chunk]:
    """Chunks covering every test exactly once, in the order to hand them out.

    ``workers`` is how many machines are expected to take part (at least 1 is
    assumed). See the module docstring for the method and the numbers.
    """
    workers = max(1, workers)
    groups = _group_by_hardware(tests)
    known = [t.estimated_seconds for t in tests if t.estimated_seconds is not None]
    per_group: list[list[Chunk]]
    if known:
        fill = statistics.median(max(0.0, seconds) for seconds in known)
        cap = max(1, max_chunks_per_worker * workers)
        per_group = [
            _split_by_duration(
                hardware,
                [
                    (
                        t.nodeid,
                        fill if t.estimated_seconds is None else max(0.0, t.estimated_seconds),
                    )
                    for t in group
                ],
                workers=workers,
                factor=max(1.0, factor),
                min_budget=min_chunk_seconds,
                max_chunks=cap,
            )
            for hardware, group in groups
        ]
        return _merge(per_group)
    target = max(1, chunks_per_worker * workers)
    per_group = [_split_by_count(hardware, group, target) for hardware, group in groups]
    return _merge(per_group)


def _group_by_hardware(tests: Sequence[SuiteTest]) -> list[tuple[tuple[str, ...], list[SuiteTest]]]:
    """Tests grouped by the hardware they need, groups in order of first
    appearance. The requirement is a set: ("a", "b") and ("b", "a") are one."""
    groups: dict[tuple[str, ...], list[SuiteTest]] = {}
    for test in tests:
        groups.setdefault(tuple(sorted(set(test.hardware))), []).append(test)
    return list(groups.items())


def _split_by_duration(
    hardware: tuple[str, ...],
    tests: list[tuple[str, float]],
    *,
    workers: int,
    factor: float,
    min_budget: float,
    max_chunks: int,
) -> list[Chunk]:
    """Factoring over the tests sorted longest first (see the module docstring).

    If the cut has too many chunks, the floor doubles and the cut is redone:
    a few passes at most, since the count of floor-sized chunks halves each time.
    """
    # Stable sort: equal estimates keep collection order (deterministic, and
    # tests of one module stay near each other).
    ordered = sorted(tests, key=lambda item: -item[1])
    total = sum(seconds for _, seconds in ordered)
    floor = max(min_budget, total / max_chunks)
    while True:
        chunks = _factoring_cut(hardware, ordered, total, workers, factor, floor)
        if len(chunks) <= max_chunks:
            return chunks
        floor *= 2


def _factoring_cut(
    hardware: tuple[str, ...],
    ordered: list[tuple[str, float]],
    total: float,
    workers: int,
    factor: float,
    floor: float,
) -> list[Chunk]:
    """Cut ``ordered`` (longest first) into batches of ``workers`` chunks.

    Each chunk starts with the longest test not yet taken and fills its budget
    from that test's own file first (longest first), then from the next
    longest test's file, and so on. The big tests still lead, but a chunk is
    mostly one module: a worker's session collects only the files its chunks
    need, so a module spread over every chunk would be collected by every worker.
    """
    by_file: dict[str, list[int]] = {}
    for position, (nodeid, _) in enumerate(ordered):
        by_file.setdefault(_file_of(nodeid), []).append(position)
    taken = [False] * len(ordered)
    cursor = {path: 0 for path in by_file}
    chunks: list[Chunk] = []
    remaining = total
    anchor = 0
    left = len(ordered)
    while left:
        # One batch: a chunk per worker, all with the same budget.
        budget = max(floor, remaining / (factor * workers))
        for _ in range(workers):
            if not left:
                break
            node_ids: list[str] = []
            seconds = 0.0
            while anchor < len(ordered) and taken[anchor]:
                anchor += 1
            lead = anchor
            while lead < len(ordered):
                if taken[lead]:
                    lead += 1
                    continue
                if node_ids and seconds + ordered[lead][1] > budget:
                    break
                # The lead test's file, longest first, while the budget holds.
                path = _file_of(ordered[lead][0])
                positions = by_file[path]
                while cursor[path] < len(positions):
                    position = positions[cursor[path]]
                    if taken[position]:
                        cursor[path] += 1
                        continue
                    estimate = ordered[position][1]
                    if node_ids and seconds + estimate > budget:
                        break
                    taken[position] = True
                    node_ids.append(ordered[position][0])
                    seconds += estimate
                    cursor[path] += 1
                    left -= 1
                lead += 1
            chunks.append(Chunk(node_ids=node_ids, estimated_seconds=seconds, hardware=hardware))
            remaining -= seconds
    return chunks


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _split_by_count(hardware: tuple[str, ...], tests: list[SuiteTest], target: int) -> list[Chunk]:
    """``target`` chunks of equal count (the first ones one test larger when
    it does not divide), in collection order; fewer when there are fewer tests."""
    count = min(target, len(tests))
    size, extra = divmod(len(tests), count)
    chunks: list[Chunk] = []
    start = 0
    for number in range(count):
        end = start + size + (1 if number < extra else 0)
        chunks.append(
            Chunk(
                node_ids=[test.nodeid for test in tests[start:end]],
                estimated_seconds=0.0,
                hardware=hardware,
            )
        )
        start = end
    return chunks


def _merge(per_group: list[list[Chunk]]) -> list[Chunk]:
    """All groups' chunks in one list, interleaved by progress.

    A chunk's key is the share of its group's work (estimated seconds, or
    tests without history) handed out before it, so every group's first chunk
    goes out first, and each group then advances at the same pace: a group
    that only a few machines can run is not left for the end behind the
    others' big chunks. Ties go to the group seen first in the suite; each
    group's own order is kept (its keys only grow).
    """
    keyed: list[tuple[float, int, int, Chunk]] = []
    for group, chunks in enumerate(per_group):
        weights = [chunk.estimated_seconds for chunk in chunks]
        if sum(weights) <= 0:
            weights = [float(len(chunk.node_ids)) for chunk in chunks]
        total = sum(weights)
        before = 0.0
        for index, (chunk, weight) in enumerate(zip(chunks, weights, strict=True)):
            keyed.append((before / total, group, index, chunk))
            before += weight
    keyed.sort(key=lambda item: item[:3])
    return [chunk for *_, chunk in keyed]
