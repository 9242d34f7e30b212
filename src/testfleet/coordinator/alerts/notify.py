"""Webhook notifications of alerts, sent without ever blocking the coordinator.

Callers: :class:`~testfleet.coordinator.alerts.engine.AlertEngine` calls
:meth:`Notifier.announce` for each state change (firing, resolved) and
:meth:`Notifier.remind` with the firing alerts after each evaluation; the
app's lifespan runs :meth:`Notifier.run` as a background task and cancels it
at shutdown. Neither call awaits anything: each receiver has a bounded queue,
and a full queue drops the notification (recorded and counted) instead of
waiting, so a slow or dead receiver costs the coordinator nothing but that
receiver's notifications.

One sender task per receiver posts its queue's notifications in order with an
``httpx.AsyncClient``: up to ``max_attempts`` tries, each bounded as a whole
by ``timeout_seconds`` on the injected clock (connect, send and the whole
answer: a receiver that trickles its answer is cut off too), waiting
``backoff_seconds`` (doubling) on the injected clock between them; a 2xx
answer is ``sent``, anything else after the last try ``failed`` with the last
error. Every outcome becomes an ``alert_notifications`` row and a count in
:attr:`Notifier.results` (the metrics endpoint reads it).

Deduplication: one notification per state change per receiver (an alert
announced firing twice is sent once), plus a repeat every receiver's
``repeat_interval_seconds`` while it keeps firing. Alerts found firing at
start-up (a restart) are not announced again: their next repeat is one
interval after start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from testfleet.clock import Clock, wait_within
from testfleet.coordinator.alerts.config import ReceiverConfig
from testfleet.coordinator.alerts.payloads import alertmanager_payload, slack_payload
from testfleet.domain.alerts import (
    AlertRecord,
    AlertState,
    NotificationRecord,
    NotificationStatus,
    ReceiverKind,
)
from testfleet.store.contract import AlertStore
from testfleet.store.errors import StoreError

log = logging.getLogger(__name__)

#: How much of an error message a notification row keeps.
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True, slots=True)
class Notice:
    """One alert state to send to one receiver (a copy of the alert)."""

    alert: AlertRecord
    repeat: bool = False


class Notifier:
    """Sends alert notifications to webhooks (see the module docstring)."""

    def __init__(
        self,
        receivers: Sequence[ReceiverConfig],
        store: AlertStore,
        clock: Clock,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        external_url: str = "",
    ) -> None:
        """``transport``: httpx's transport (tests pass ``httpx.MockTransport``);
        ``external_url``: the coordinator's public URL (``--public-url``), which
        payloads link to (``payloads.py``)."""
        self._receivers = {receiver.name: receiver for receiver in receivers}
        self._store = store
        self._clock = clock
        self._transport = transport
        self._external_url = external_url
        self._queues: dict[str, asyncio.Queue[Notice]] = {
            receiver.name: asyncio.Queue(maxsize=receiver.queue_size) for receiver in receivers
        }
        #: Told of every outcome, by receiver kind (``/metrics`` counts them; the
        #: kind, not the configured name, so the metric's labels stay a fixed set).
        self.on_result: Callable[[ReceiverKind, NotificationStatus], None] | None = None
        #: When each firing alert was last queued for each receiver (alert id, receiver).
        self._last_sent: dict[tuple[str, str], float] = {}
        self._unrecorded: list[NotificationRecord] = []
        #: Outcomes so far, by receiver and status (read by ``/metrics``).
        self.results: Counter[tuple[str, NotificationStatus]] = Counter()
        #: Rows that could not be written (the store failed); they are counted, not retried.
        self.unrecorded_failures = 0

    @property
    def receivers(self) -> list[str]:
        return list(self._receivers)

    def announce(self, alert: AlertRecord) -> None:
        """Queue ``alert``'s new state (firing or resolved) for every receiver, once."""
        for name in self._receivers:
            key = (alert.alert_id, name)
            if alert.state is AlertState.FIRING:
                if key in self._last_sent:
                    continue  # this change was announced already
                self._last_sent[key] = self._clock.now()
            elif alert.state is AlertState.RESOLVED:
                self._last_sent.pop(key, None)
            else:
                continue  # pending alerts are nobody's business yet
            self._queue(name, Notice(_copy(alert)))

    def remind(self, firing: Sequence[AlertRecord]) -> None:
        """Queue a repeat of each firing alert whose receiver's repeat interval has
        passed since it was last sent there (called after every evaluation)."""
        now = self._clock.now()
        for alert in firing:
            for name, receiver in self._receivers.items():
                key = (alert.alert_id, name)
                last = self._last_sent.get(key)
                if last is None:
                    # Firing since before a restart: announced then; repeat later.
                    self._last_sent[key] = now
                elif now - last >= receiver.repeat_interval_seconds:
                    self._last_sent[key] = now
                    self._queue(name, Notice(_copy(alert), repeat=True))

    def _queue(self, name: str, notice: Notice) -> None:
        try:
            self._queues[name].put_nowait(notice)
        except asyncio.QueueFull:
            log.warning("alert notification to %s dropped: its queue is full", name)
            self._record(
                name, notice, NotificationStatus.DROPPED, 0, "the receiver's queue is full"
            )

    def _record(
        self,
        name: str,
        notice: Notice,
        status: NotificationStatus,
        attempts: int,
        error: str | None,
    ) -> None:
        self.results[(name, status)] += 1
        if self.on_result is not None:
            self.on_result(self._receivers[name].kind, status)
        self._unrecorded.append(
            NotificationRecord(
                alert_id=notice.alert.alert_id,
                receiver=name,
                alert_state=notice.alert.state,
                status=status,
                attempts=attempts,
                time=self._clock.now(),
                error=None if error is None else error[:MAX_ERROR_LENGTH],
                repeat=notice.repeat,
            )
        )

    async def flush(self) -> None:
        """Write the outcomes not yet stored (in a worker thread); a store failure
        is logged and counted, never raised: notifications are not worth stopping for."""
        records, self._unrecorded = self._unrecorded, []
        if not records:
            return
        try:
            await asyncio.to_thread(self._store.record_notifications, records)
        except StoreError as exc:
            self.unrecorded_failures += len(records)
            log.warning("could not record %d alert notifications: %s", len(records), exc)

    async def run(self) -> None:
        """Send every receiver's queue until cancelled (the app's lifespan does)."""
        async with httpx.AsyncClient(transport=self._transport) as client:
            senders = [
                asyncio.create_task(self._send_forever(client, receiver), name=f"notify-{name}")
                for name, receiver in self._receivers.items()
            ]
            try:
                await asyncio.gather(*senders)
            finally:
                for sender in senders:
                    sender.cancel()
                for sender in senders:
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
                await self.flush()

    async def _send_forever(self, client: httpx.AsyncClient, receiver: ReceiverConfig) -> None:
        queue = self._queues[receiver.name]
        while True:
            notice = await queue.get()
            status, attempts, error = await self._deliver(client, receiver, notice)
            self._record(receiver.name, notice, status, attempts, error)
            await self.flush()

    async def _deliver(
        self, client: httpx.AsyncClient, receiver: ReceiverConfig, notice: Notice
    ) -> tuple[NotificationStatus, int, str | None]:
        """Post ``notice`` to ``receiver`` with retries: the outcome, tries, last error."""
        payload = self._payload(receiver, notice)
        error: str | None = None
        for attempt in range(1, receiver.max_attempts + 1):
            try:
                # httpx's timeout bounds each read, not the whole try: a receiver
                # that sends a byte now and then would hold the sender forever.
                # The injected clock bounds the whole try.
                answer = await wait_within(
                    self._clock,
                    client.post(receiver.url, json=payload, timeout=receiver.timeout_seconds),
                    receiver.timeout_seconds,
                )
                if answer.is_success:
                    return NotificationStatus.SENT, attempt, None
                error = f"HTTP {answer.status_code}: {answer.text[:200]}"
            except TimeoutError:
                error = f"no whole answer within {receiver.timeout_seconds:g} s"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt < receiver.max_attempts:
                await self._clock.sleep(receiver.backoff_seconds * 2 ** (attempt - 1))
        return NotificationStatus.FAILED, receiver.max_attempts, error

    def _payload(self, receiver: ReceiverConfig, notice: Notice) -> dict[str, Any]:
        if receiver.kind is ReceiverKind.SLACK:
            return slack_payload(
                notice.alert, repeat=notice.repeat, external_url=self._external_url
            )
        return alertmanager_payload(notice.alert, receiver.name, self._external_url)


def _copy(alert: AlertRecord) -> AlertRecord:
    """A copy the engine's later changes cannot reach."""
    return replace(alert, labels=dict(alert.labels), annotations=dict(alert.annotations))
