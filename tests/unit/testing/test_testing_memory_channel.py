"""The in-memory channel pair keeps the promises of a real connection: order,
a close seen by both ends, and failures a test injects on purpose."""

from __future__ import annotations

import pytest

from testfleet.protocol.channel import Channel, ChannelClosed, CloseCode, ConnectFailed
from testfleet.testing import MemoryConnector, channel_pair


async def test_frames_arrive_in_order_both_ways() -> None:
    left, right = channel_pair()
    await left.send("one")
    await left.send(b"two")
    await right.send("back")
    assert [await right.receive(), await right.receive()] == ["one", b"two"]
    assert await left.receive() == "back"


async def test_a_clean_close_is_seen_by_the_peer_after_what_was_sent() -> None:
    left, right = channel_pair()
    await left.send("last words")
    await left.close()
    assert await right.receive() == "last words"
    with pytest.raises(ChannelClosed) as closed:
        await right.receive()
    assert closed.value.clean
    with pytest.raises(ChannelClosed):
        await right.send("too late")


async def test_a_policy_close_and_a_severed_channel_are_not_clean() -> None:
    left, right = channel_pair()
    await right.close(CloseCode.POLICY_VIOLATION)
    with pytest.raises(ChannelClosed) as refused:
        await left.receive()
    assert not refused.value.clean

    left, right = channel_pair()
    right.sever()
    with pytest.raises(ChannelClosed, match="connection lost") as lost:
        await left.receive()
    assert not lost.value.clean


async def test_dropped_frames_never_arrive() -> None:
    left, right = channel_pair()
    left.drop = lambda frame: frame == "lost"
    await left.send("lost")
    await left.send("kept")
    assert await right.receive() == "kept"
    assert left.sent == ["kept"]


async def test_the_connector_hands_the_far_end_to_its_server_and_can_refuse() -> None:
    served: list[str | bytes] = []

    async def echo_once(channel: Channel) -> None:
        frame = await channel.receive()
        served.append(frame)
        await channel.send(frame)

    connector = MemoryConnector(echo_once)
    async with connector.connect("ws://memory/1") as channel:
        await channel.send("ping")
        assert await channel.receive() == "ping"
    assert served == ["ping"]
    assert connector.links[0].worker.closed

    connector.refuse = "connection refused: nothing listens at memory:80"
    with pytest.raises(ConnectFailed, match="nothing listens"):
        async with connector.connect("ws://memory/2"):
            pass
    await connector.close()
