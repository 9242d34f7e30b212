"""ConnectionRegistry.wait_sent: bounded on the clock it is given, never on the wall's."""

from __future__ import annotations

import asyncio

from testfleet.coordinator.connections import ConnectionRegistry
from testfleet.protocol.channel import CloseCode, Frame
from testfleet.protocol.messages import Error, ProtocolErrorCode
from testfleet.testing.fake_clock import FakeClock


class StuckChannel:
    """A channel whose close hangs until the test lets it go: a peer that never
    takes the closing frame."""

    def __init__(self) -> None:
        self.sent: list[Frame] = []
        self.release = asyncio.Event()
        self.closed: CloseCode | None = None

    async def send(self, frame: Frame) -> None:
        self.sent.append(frame)

    async def receive(self) -> Frame:
        await asyncio.Event().wait()
        raise AssertionError("never")

    async def close(self, code: CloseCode = CloseCode.NORMAL) -> None:
        await self.release.wait()
        self.closed = code


async def test_wait_sent_gives_up_after_its_limit_on_the_clock() -> None:
    clock = FakeClock()
    registry = ConnectionRegistry()
    channel = StuckChannel()
    connection_id = registry.open(channel)
    registry.close(connection_id, Error(code=ProtocolErrorCode.INVALID_MESSAGE, message="refused"))
    started = clock.now()
    async with clock.autojump():
        await asyncio.wait_for(registry.wait_sent(connection_id, 2.0, clock), timeout=10)
    assert clock.now() == started + 2.0  # the limit ran out in fake time
    assert len(channel.sent) == 1  # the error frame went before the close
    assert channel.closed is None
    # Giving up stopped the waiting, not the sender: let the close through, and
    # a second wait (on a clock nobody moves now) ends when the sender does.
    channel.release.set()
    await asyncio.wait_for(registry.wait_sent(connection_id, 2.0, clock), timeout=10)
    assert channel.closed is CloseCode.POLICY_VIOLATION
    await registry.forget(connection_id)


async def test_wait_sent_returns_when_the_close_has_gone_out() -> None:
    clock = FakeClock()
    registry = ConnectionRegistry()
    channel = StuckChannel()
    channel.release.set()
    connection_id = registry.open(channel)
    registry.close(connection_id)
    started = clock.now()
    await asyncio.wait_for(registry.wait_sent(connection_id, 2.0, clock), timeout=10)
    assert clock.now() == started  # nobody advanced the clock: the close itself ended it
    assert channel.closed is CloseCode.NORMAL
    await registry.forget(connection_id)
