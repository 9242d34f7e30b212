"""Webhook notifications: a real receiver on loopback gets the firing and the
resolved payloads in both formats; retries with backoff on the fake clock; a
dead receiver is recorded as failed, a full queue drops without waiting;
deduplication and repeats."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import httpx
import pytest

from testfleet.coordinator.alerts.config import ReceiverConfig
from testfleet.coordinator.alerts.notify import Notifier
from testfleet.domain.alerts import (
    AlertRecord,
    AlertRule,
    AlertState,
    NotificationStatus,
    ReceiverKind,
    Severity,
    alert_id,
)
from testfleet.store import Store
from testfleet.testing import FakeClock

T0 = 1_800_000_000.0


def firing_alert() -> AlertRecord:
    labels = {"worker_id": "w1"}
    return AlertRecord(
        alert_id=alert_id(AlertRule.WORKER_LOST, labels, T0),
        rule=AlertRule.WORKER_LOST,
        labels=labels,
        severity=Severity.CRITICAL,
        state=AlertState.FIRING,
        summary="worker w1 is lost: silent for 20 s",
        value=20.0,
        pending_since=T0,
        fired_at=T0,
        last_seen=T0,
    )


def resolved(alert: AlertRecord) -> AlertRecord:
    return replace(alert, state=AlertState.RESOLVED, resolved_at=T0 + 60)


@dataclass
class Receiver:
    """A tiny HTTP server on 127.0.0.1 that records each POSTed JSON body."""

    status: int = 200
    bodies: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        self.bodies.append(json.loads(await reader.readexactly(length)))
        writer.write(f"HTTP/1.1 {self.status} X\r\ncontent-length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()
        self.arrived.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def sleeps_until(clock: FakeClock, when: float) -> bool:
    return clock.next_deadline == when


def has_bodies(receiver: Receiver, count: int) -> bool:
    return len(receiver.bodies) == count


@contextlib.asynccontextmanager
async def receiving(status: int = 200) -> AsyncIterator[Receiver]:
    receiver = Receiver(status=status)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    async with server:
        yield receiver


@pytest.fixture
def store() -> Iterator[Store]:
    with Store(":memory:") as opened:
        yield opened


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def running(notifier: Notifier) -> AsyncIterator[None]:
    task = asyncio.create_task(notifier.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("kind", list(ReceiverKind))
async def test_a_loopback_receiver_gets_the_firing_and_the_resolved_payloads(
    store: Store, kind: ReceiverKind
) -> None:
    async with receiving() as receiver:
        config = ReceiverConfig(name="ops", url=receiver.url, kind=kind)
        notifier = Notifier([config], store, FakeClock(T0), external_url="https://fleet:8700")
        alert = firing_alert()
        async with running(notifier):
            notifier.announce(alert)
            notifier.announce(alert)  # the same change twice: sent once
            notifier.announce(resolved(alert))
            await wait_for(lambda: len(receiver.bodies) == 2, "two notifications")
            await wait_for(lambda: len(store.alert_notifications()) == 2, "two rows")
    firing, ended = receiver.bodies
    if kind is ReceiverKind.SLACK:
        head = "[FIRING] worker_lost (critical) worker_id=w1"
        link = "<https://fleet:8700/dashboard/alerts|alerts page>"
        assert firing == {"text": f"{head}: worker w1 is lost: silent for 20 s {link}"}
        assert isinstance(ended["text"], str)
        assert ended["text"].startswith("[RESOLVED] worker_lost (critical) worker_id=w1")
    else:
        assert firing["version"] == "4"
        assert firing["status"] == "firing"
        assert firing["receiver"] == "ops"
        assert firing["groupLabels"] == {"alertname": "worker_lost"}
        assert firing["externalURL"] == "https://fleet:8700"
        (item,) = firing["alerts"]
        assert item["labels"] == {
            "alertname": "worker_lost",
            "severity": "critical",
            "worker_id": "w1",
        }
        assert item["annotations"]["summary"] == alert.summary
        assert item["generatorURL"] == "https://fleet:8700/dashboard/alerts"
        assert item["startsAt"] == "2027-01-15T08:00:00.000Z"
        assert item["endsAt"] == "0001-01-01T00:00:00Z"
        assert ended["status"] == "resolved"
        assert ended["alerts"][0]["endsAt"] == "2027-01-15T08:01:00.000Z"
        assert ended["groupKey"] == firing["groupKey"]
    rows = store.alert_notifications()
    assert {(r.alert_state, r.status, r.attempts) for r in rows} == {
        (AlertState.FIRING, NotificationStatus.SENT, 1),
        (AlertState.RESOLVED, NotificationStatus.SENT, 1),
    }
    assert notifier.results == {("ops", NotificationStatus.SENT): 2}


async def test_a_failing_receiver_is_retried_with_backoff_then_recorded_failed(
    store: Store,
) -> None:
    clock = FakeClock(T0)
    async with receiving(status=503) as receiver:
        config = ReceiverConfig(name="ops", url=receiver.url, max_attempts=3, backoff_seconds=2)
        notifier = Notifier([config], store, clock)
        async with running(notifier):
            notifier.announce(firing_alert())
            for expected in (1, 2, 3):
                await wait_for(partial(has_bodies, receiver, expected), f"try {expected}")
                if expected < 3:
                    # Each try has a deadline of its own (timeout_seconds) until its
                    # answer is read; then the backoff is the only sleeper.
                    backoff = clock.now() + 2**expected
                    await wait_for(partial(sleeps_until, clock, backoff), "the backoff")
                    clock.advance(2**expected)
            await wait_for(lambda: len(store.alert_notifications()) == 1, "the row")
    (row,) = store.alert_notifications()
    assert (row.status, row.attempts) == (NotificationStatus.FAILED, 3)
    assert row.error is not None
    assert "HTTP 503" in row.error
    assert notifier.results == {("ops", NotificationStatus.FAILED): 1}


async def test_a_dead_receiver_fails_and_a_full_queue_drops_without_waiting(store: Store) -> None:
    async with receiving() as receiver:
        dead_url = receiver.url
    # Nothing listens there any more: every try is refused at once.
    dead = ReceiverConfig(name="dead", url=dead_url, max_attempts=2, backoff_seconds=0)
    notifier = Notifier([dead], store, FakeClock(T0))
    async with running(notifier):
        notifier.announce(firing_alert())
        await wait_for(lambda: len(store.alert_notifications()) == 1, "the failed row")
    (row,) = store.alert_notifications()
    assert (row.status, row.attempts) == (NotificationStatus.FAILED, 2)
    assert row.error is not None

    # A receiver that never answers holds one notification; with a queue of
    # one, the third is dropped, and announcing never waits.
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    slow = ReceiverConfig(name="slow", url="http://127.0.0.1:9/hook", queue_size=1)
    notifier = Notifier([slow], store, FakeClock(T0), transport=httpx.MockTransport(hang))
    async with running(notifier):
        alerts = [replace(firing_alert(), alert_id=f"a{i}") for i in range(3)]
        notifier.announce(alerts[0])
        await asyncio.sleep(0)  # the sender takes the first and hangs on it
        await wait_for(lambda: notifier._queues["slow"].empty(), "the sender to take one")
        notifier.announce(alerts[1])  # queued
        notifier.announce(alerts[2])  # the queue is full: dropped
        assert notifier.results == {("slow", NotificationStatus.DROPPED): 1}
        await notifier.flush()
    dropped = [r for r in store.alert_notifications() if r.receiver == "slow"]
    assert [(r.alert_id, r.status, r.attempts) for r in dropped] == [
        ("a2", NotificationStatus.DROPPED, 0)
    ]


async def test_a_firing_alert_repeats_after_the_repeat_interval(store: Store) -> None:
    clock = FakeClock(T0)
    sent: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200)

    config = ReceiverConfig(
        name="chat", url="http://chat/hook", kind=ReceiverKind.SLACK, repeat_interval_seconds=60
    )
    notifier = Notifier([config], store, clock, transport=httpx.MockTransport(answer))
    alert = firing_alert()
    async with running(notifier):
        notifier.announce(alert)
        notifier.remind([alert])  # not yet due
        clock.advance(59)
        notifier.remind([alert])
        clock.advance(1)
        notifier.remind([alert])  # due: one repeat
        notifier.remind([alert])
        await wait_for(lambda: len(sent) == 2, "the first and one repeat")
        await wait_for(lambda: len(store.alert_notifications()) == 2, "two rows")
    assert isinstance(sent[1]["text"], str)
    assert sent[1]["text"].endswith("(still firing)")
    assert sorted(r.repeat for r in store.alert_notifications()) == [False, True]


class Trickle(httpx.AsyncByteStream):
    """An answer body that never ends: a byte at a time, each quickly."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started.set()
        while True:
            await asyncio.sleep(0.001)
            yield b"."


async def test_a_receiver_trickling_its_answer_is_cut_off_by_the_limit_on_the_whole_try(
    store: Store,
) -> None:
    # httpx's own timeout bounds each read; here every read is quick, so only a
    # bound on the whole try (on the injected clock) ends it.
    clock = FakeClock(T0)
    body = Trickle()
    transport = httpx.MockTransport(lambda _: httpx.Response(200, stream=body))
    config = ReceiverConfig(name="ops", url="http://127.0.0.1:9/hook", max_attempts=1)
    notifier = Notifier([config], store, clock, transport=transport)
    async with running(notifier):
        notifier.announce(firing_alert())
        await wait_for(body.started.is_set, "the answer to start")
        await wait_for(lambda: clock.next_deadline is not None, "the try's deadline")
        assert clock.next_deadline == clock.now() + config.timeout_seconds
        clock.advance(config.timeout_seconds)
        await wait_for(lambda: len(store.alert_notifications()) == 1, "the failed row")
    (row,) = store.alert_notifications()
    assert (row.status, row.attempts) == (NotificationStatus.FAILED, 1)
    assert row.error == "no whole answer within 5 s"
