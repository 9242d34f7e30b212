"""The dashboard's event feed on a fake clock: sampling only while someone
listens, events only when something changed, resuming with Last-Event-ID."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from testfleet.coordinator.dashboard.feed import (
    DashboardFeed,
    FeedEvent,
    FeedKind,
    parse_last_event_id,
)
from testfleet.testing import FakeClock


class Source:
    """What the sampler sees: set by the test, counted when read."""

    def __init__(self) -> None:
        self.overview = "a"
        self.samples = 0

    async def sample(self) -> list[tuple[FeedKind, str]]:
        self.samples += 1
        return [(FeedKind.OVERVIEW, self.overview), (FeedKind.TASKS, "0")]


def events_of(chunks: list[str]) -> list[tuple[str, str, str]]:
    """(id, event, data) of each event in the encoded chunks (the retry line left out)."""
    found = []
    for chunk in chunks:
        fields = dict(line.split(": ", 1) for line in chunk.strip().split("\n") if ": " in line)
        if "event" in fields:
            found.append((fields["id"], fields["event"], fields["data"]))
    return found


async def take(stream: AsyncGenerator[str], n: int) -> list[str]:
    return [await anext(stream) for _ in range(n)]


def test_an_event_is_encoded_as_server_sent_events() -> None:
    event = FeedEvent(7, FeedKind.OVERVIEW, "<p>one</p>\n<p>two</p>")
    assert event.encode() == "id: 7\nevent: overview\ndata: <p>one</p>\ndata: <p>two</p>\n\n"


def test_publish_skips_repeats_but_never_points() -> None:
    feed = DashboardFeed(Source().sample, FakeClock())
    assert feed.publish(FeedKind.OVERVIEW, "x") is not None
    assert feed.publish(FeedKind.OVERVIEW, "x") is None
    assert feed.publish(FeedKind.POINT, "{}") is not None
    assert feed.publish(FeedKind.POINT, "{}") is not None


def test_since_replays_what_was_missed_or_else_the_latest_of_each_kind() -> None:
    feed = DashboardFeed(Source().sample, FakeClock(), capacity=4)
    for n in range(6):
        feed.publish(FeedKind.OVERVIEW, f"o{n}")  # ids 1..6; the ring keeps 3..6
    feed.publish(FeedKind.TASKS, "t")  # id 7
    assert [e.id for e in feed.since(5)] == [6, 7]
    assert [e.id for e in feed.since(3)] == [4, 5, 6, 7]
    # Too old (its successors left the ring), none, or from another process: latest only.
    for last in (1, None, 10_000):
        assert [(e.kind, e.data) for e in feed.since(last)] == [
            (FeedKind.OVERVIEW, "o5"),
            (FeedKind.TASKS, "t"),
        ]
    assert feed.since(7) == []


@pytest.mark.parametrize(
    ("header", "expected"), [(None, None), ("12", 12), ("x", None), ("-1", None), ("9" * 30, None)]
)
def test_last_event_id_is_read_only_when_it_is_ours(
    header: str | None, expected: int | None
) -> None:
    assert parse_last_event_id(header) == expected


async def test_a_stream_sends_the_state_then_each_change_and_samples_only_while_listened() -> None:
    clock, source = FakeClock(), Source()
    feed = DashboardFeed(source.sample, clock, interval=1.0)
    assert not feed.sampling
    assert source.samples == 0
    stream = feed.stream(None, lifetime=60)
    first = await take(stream, 3)
    assert first[0].startswith("retry: 1000")
    assert [(kind, data) for _, kind, data in events_of(first)] == [
        ("overview", "a"),
        ("tasks", "0"),
    ]
    assert feed.sampling
    assert feed.listeners == 1

    # Nothing changed: the next samples send nothing.
    for _ in range(3):
        clock.advance(1)
        await asyncio.sleep(0)
    source.overview = "b"
    clock.advance(1)
    [chunk] = await take(stream, 1)
    assert events_of([chunk])[0][1:] == ("overview", "b")
    samples = source.samples
    assert samples >= 4  # one per interval, not one per change or per listener

    await stream.aclose()
    assert feed.listeners == 0
    clock.advance(1)
    await asyncio.sleep(0)
    clock.advance(1)
    await asyncio.sleep(0)
    assert not feed.sampling  # the sampler stops with its last listener
    assert source.samples <= samples + 1


async def test_a_reconnect_with_last_event_id_gets_only_what_it_missed() -> None:
    clock, source = FakeClock(), Source()
    feed = DashboardFeed(source.sample, clock, interval=1.0)
    stream = feed.stream(None, lifetime=60)
    seen = events_of(await take(stream, 3))
    await stream.aclose()
    last_id = seen[-1][0]
    feed.publish(FeedKind.OVERVIEW, "c")
    again = feed.stream(last_id, lifetime=60)
    resumed = events_of(await take(again, 2))
    assert [(kind, data) for _, kind, data in resumed] == [("overview", "c")]
    await again.aclose()


async def test_a_stream_ends_after_its_lifetime_and_on_close() -> None:
    clock = FakeClock()
    feed = DashboardFeed(Source().sample, clock, interval=1.0)
    stream = feed.stream(None, lifetime=5)
    await take(stream, 3)
    async with clock.autojump():
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
    other = feed.stream(None, lifetime=60)
    await take(other, 3)
    pending = asyncio.ensure_future(anext(other))
    await asyncio.sleep(0)
    await feed.close()
    with pytest.raises(StopAsyncIteration):
        await pending
    assert not feed.sampling
