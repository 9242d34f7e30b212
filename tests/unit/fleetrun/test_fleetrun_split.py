"""split_suite: chunks that cover the suite once, balance the finish, and
never mix hardware."""

from __future__ import annotations

import heapq
import math
import random

import pytest

from testfleet.fleetrun.split import Chunk, SuiteTest, split_suite


def lognormal_suite(seed: int, count: int = 400) -> list[SuiteTest]:
    """Many short tests and a few long ones (median 20 ms, capped at 1 s)."""
    rng = random.Random(seed)
    return [
        SuiteTest(
            f"tests/test_m{i // 20}.py::test_{i}", min(1.0, rng.lognormvariate(math.log(0.02), 1.2))
        )
        for i in range(count)
    ]


def node_ids(chunks: list[Chunk]) -> list[str]:
    return [nodeid for chunk in chunks for nodeid in chunk.node_ids]


def list_schedule(chunks: list[Chunk], workers: int, overhead: float) -> float:
    """When the last of ``workers`` identical machines finishes, each taking
    the next chunk as soon as it is free."""
    free = [0.0] * workers
    for chunk in chunks:
        start = heapq.heappop(free)
        heapq.heappush(free, start + overhead + chunk.estimated_seconds)
    return max(free)


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_every_test_lands_in_exactly_one_chunk(workers: int) -> None:
    suite = lognormal_suite(seed=1)
    chunks = split_suite(suite, workers)
    assert sorted(node_ids(chunks)) == sorted(test.nodeid for test in suite)
    assert all(chunk.node_ids for chunk in chunks)
    assert len(chunks) <= 16 * workers
    for chunk in chunks:
        by_id = {test.nodeid: test for test in suite}
        expected = sum(by_id[nodeid].estimated_seconds or 0.0 for nodeid in chunk.node_ids)
        assert chunk.estimated_seconds == pytest.approx(expected)


def test_longest_tests_go_first_and_chunks_shrink_towards_the_tail() -> None:
    suite = lognormal_suite(seed=2)
    chunks = split_suite(suite, 4)
    estimates = {test.nodeid: test.estimated_seconds or 0.0 for test in suite}
    # Each chunk leads with the longest test not in an earlier chunk...
    for index, chunk in enumerate(chunks):
        later = [estimates[n] for c in chunks[index:] for n in c.node_ids]
        assert estimates[chunk.node_ids[0]] == max(later)
    # ...and takes the rest of that test's module longest first while it fits.
    for chunk in chunks:
        lead_file = chunk.node_ids[0].split("::")[0]
        same = [estimates[n] for n in chunk.node_ids if n.startswith(lead_file + "::")]
        assert same == sorted(same, reverse=True)
    head, tail = chunks[:4], chunks[-4:]
    assert min(chunk.estimated_seconds for chunk in head) > max(
        chunk.estimated_seconds for chunk in tail
    )
    # The head holds a quarter of the suite (half of it in 1/(2W) pieces).
    total = sum(chunk.estimated_seconds for chunk in chunks)
    assert sum(chunk.estimated_seconds for chunk in head) == pytest.approx(total / 2, rel=0.1)
    assert len(chunks) > 4 * 2


def test_chunks_keep_a_modules_tests_together() -> None:
    # Sessions collect only the files their chunks need: a chunk should touch
    # few modules, not a slice of every module's longest tests.
    suite = lognormal_suite(seed=3)
    chunks = split_suite(suite, 8)
    modules_per_chunk = [len({n.split("::")[0] for n in chunk.node_ids}) for chunk in chunks]
    assert sum(modules_per_chunk) <= 2 * len(chunks)
    # Every module ends up in few chunks (20 modules, 8 workers).
    chunks_per_module: dict[str, int] = {}
    for chunk in chunks:
        for module in {n.split("::")[0] for n in chunk.node_ids}:
            chunks_per_module[module] = chunks_per_module.get(module, 0) + 1
    assert max(chunks_per_module.values()) <= 6


def test_hardware_groups_never_share_a_chunk() -> None:
    suite = (
        [SuiteTest(f"t.py::cpu_{i}", 0.5) for i in range(10)]
        + [SuiteTest(f"t.py::gpu_{i}", 0.5, hardware=("gpu",)) for i in range(10)]
        + [
            # The same requirement written in another order is the same group.
            SuiteTest("t.py::both_a", 0.5, hardware=("gpu", "nvme")),
            SuiteTest("t.py::both_b", 0.5, hardware=("nvme", "gpu", "gpu")),
        ]
    )
    chunks = split_suite(suite, 2)
    assert sorted(node_ids(chunks)) == sorted(test.nodeid for test in suite)
    for chunk in chunks:
        kinds = {nodeid.split("::")[1].rsplit("_", 1)[0] for nodeid in chunk.node_ids}
        assert len(kinds) == 1, chunk
        expected = {"cpu": (), "gpu": ("gpu",), "both": ("gpu", "nvme")}[kinds.pop()]
        assert chunk.hardware == expected
    # Each group's first chunk goes out first; then the groups advance together.
    assert [chunk.hardware for chunk in chunks[:3]] == [(), ("gpu",), ("gpu", "nvme")]
    halfway = len(chunks) // 2
    assert {chunk.hardware for chunk in chunks[halfway:]} == {(), ("gpu",), ("gpu", "nvme")}


def test_without_history_tests_are_split_by_count_in_collection_order() -> None:
    suite = [SuiteTest(f"tests/test_{i // 10}.py::test_{i}", None) for i in range(50)]
    chunks = split_suite(suite, 3)
    assert len(chunks) == 12
    assert node_ids(chunks) == [test.nodeid for test in suite]
    sizes = [len(chunk.node_ids) for chunk in chunks]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)
    assert all(chunk.estimated_seconds == 0.0 for chunk in chunks)


def test_without_history_fewer_tests_than_chunks_gives_one_test_each() -> None:
    suite = [SuiteTest(f"t.py::test_{i}", None) for i in range(5)]
    chunks = split_suite(suite, 4)
    assert [chunk.node_ids for chunk in chunks] == [[test.nodeid] for test in suite]


def test_without_history_hardware_groups_are_interleaved() -> None:
    suite = [SuiteTest(f"t.py::cpu_{i}", None) for i in range(8)] + [
        SuiteTest(f"t.py::gpu_{i}", None, hardware=("gpu",)) for i in range(8)
    ]
    chunks = split_suite(suite, 1)
    assert [chunk.hardware for chunk in chunks] == [(), ("gpu",)] * 4


def test_tests_without_history_get_the_median_of_the_known() -> None:
    suite = [
        SuiteTest("t.py::a", 1.0),
        SuiteTest("t.py::b", 2.0),
        SuiteTest("t.py::c", 9.0),
        SuiteTest("t.py::new", None),
    ]
    chunks = split_suite(suite, 1, min_chunk_seconds=0.0)
    by_test = {nodeid: chunk for chunk in chunks for nodeid in chunk.node_ids}
    assert sum(chunk.estimated_seconds for chunk in chunks) == pytest.approx(14.0)
    # The new test counts 2 s: it sorts with b (collection order breaks the tie).
    assert node_ids(chunks) == ["t.py::c", "t.py::b", "t.py::new", "t.py::a"]
    assert by_test["t.py::c"].node_ids == ["t.py::c"]


def test_a_single_huge_test_is_its_own_chunk() -> None:
    suite = [SuiteTest(f"t.py::small_{i}", 0.05) for i in range(100)]
    suite.insert(37, SuiteTest("t.py::huge", 600.0))
    chunks = split_suite(suite, 4)
    assert chunks[0].node_ids == ["t.py::huge"]
    assert chunks[0].estimated_seconds == 600.0
    assert sorted(node_ids(chunks)) == sorted(test.nodeid for test in suite)


def test_zero_tests_give_zero_chunks() -> None:
    assert split_suite([], 4) == []


def test_one_worker_still_gets_a_few_chunks_in_order() -> None:
    suite = lognormal_suite(seed=3)
    chunks = split_suite(suite, 1)
    assert 1 < len(chunks) <= 16
    assert chunks[0].estimated_seconds > chunks[-1].estimated_seconds
    assert sorted(node_ids(chunks)) == sorted(test.nodeid for test in suite)


def test_workers_below_one_count_as_one() -> None:
    suite = lognormal_suite(seed=3)
    assert split_suite(suite, 0) == split_suite(suite, 1)


def test_zero_durations_make_one_chunk() -> None:
    suite = [SuiteTest(f"t.py::test_{i}", 0.0) for i in range(30)]
    chunks = split_suite(suite, 4)
    assert [chunk.node_ids for chunk in chunks] == [[test.nodeid for test in suite]]


def test_the_chunk_count_is_capped() -> None:
    suite = [SuiteTest(f"t.py::test_{i}", 1.0) for i in range(1000)]
    chunks = split_suite(suite, 2, min_chunk_seconds=0.0, max_chunks_per_worker=5)
    assert len(chunks) <= 10
    assert sorted(node_ids(chunks)) == sorted(test.nodeid for test in suite)


def test_the_split_is_deterministic() -> None:
    assert split_suite(lognormal_suite(seed=4), 6) == split_suite(lognormal_suite(seed=4), 6)


@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_list_scheduling_the_chunks_finishes_close_to_the_ideal(workers: int) -> None:
    """The module docstring's simulation: 20 ms of overhead per chunk on
    identical workers; the run ends within 10 % of the best possible."""
    suite = lognormal_suite(seed=0)
    durations = [test.estimated_seconds or 0.0 for test in suite]
    ideal = max(sum(durations) / workers, max(durations))
    finish = list_schedule(split_suite(suite, workers), workers, overhead=0.02)
    assert finish <= 1.10 * ideal, (finish, ideal)


def list_schedule_speeds(
    chunks: list[Chunk], speeds: list[float], overhead: float, *, slow_first: bool
) -> float:
    """As :func:`list_schedule`, on machines of different ``speeds``; at the start,
    when all are free, the slowest (or the fastest) take the first chunks."""
    order = sorted(range(len(speeds)), key=lambda i: speeds[i], reverse=not slow_first)
    free = [(0.0, rank, i) for rank, i in enumerate(order)]
    heapq.heapify(free)
    for chunk in chunks:
        start, rank, i = heapq.heappop(free)
        heapq.heappush(free, (start + overhead + chunk.estimated_seconds / speeds[i], rank, i))
    return max(end for end, _, _ in free)


@pytest.mark.parametrize(
    "speeds", [[3.0] + [1.0] * 7, [2.0] * 4 + [1.0] * 4, [1.0] * 7 + [0.5], [4.0, 1.0, 1.0, 1.0]]
)
@pytest.mark.parametrize("slow_first", [False, True])
def test_workers_of_different_speeds_finish_close_to_the_speed_weighted_ideal(
    speeds: list[float], slow_first: bool
) -> None:
    """Why the split does not size chunks by worker speed (module docstring):
    the shrinking chunks already let fast machines take more of them."""
    for seed in range(5):
        suite = lognormal_suite(seed)
        durations = [test.estimated_seconds or 0.0 for test in suite]
        ideal = max(sum(durations) / sum(speeds), max(durations) / max(speeds))
        chunks = split_suite(suite, len(speeds))
        finish = list_schedule_speeds(chunks, speeds, 0.02, slow_first=slow_first)
        assert finish <= 1.2 * ideal, (seed, finish, ideal)
