"""The chaos suite's link proxy (chaos_proxy.py) on loopback: it forwards bytes
unchanged, holds them while stalled, delays them by the configured latency
(through an injected sleep, so nothing waits on wall time) and resets every
connection on drop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from chaos_proxy import Proxy, ThreadedProxy

#: An upper bound on one read in these tests (never an expectation of speed).
READ_BOUND = 10.0


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


class Recorder:
    """A sleep that records what it was asked to wait and returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def _proxy(echo_port: int, sleep: Recorder | None = None) -> Proxy:
    proxy = Proxy(("127.0.0.1", 0), ("127.0.0.1", echo_port), sleep=sleep or Recorder())
    await proxy.start()
    return proxy


async def _round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(len(payload)), READ_BOUND)
    writer.close()
    return data


async def test_bytes_pass_through_unchanged(echo_port: int) -> None:
    proxy = await _proxy(echo_port)
    payload = bytes(range(256)) * 1000
    assert await _round_trip(proxy.port, payload) == payload
    assert proxy.accepted == 1
    await proxy.close()


async def test_latency_waits_before_each_forwarded_chunk(echo_port: int) -> None:
    sleep = Recorder()
    proxy = await _proxy(echo_port, sleep)
    proxy.configure(latency_seconds=0.25)
    assert await _round_trip(proxy.port, b"ping") == b"ping"
    # One chunk each way, each delayed by the configured latency.
    assert sleep.waits == [0.25, 0.25]
    await proxy.close()


async def test_a_stalled_link_holds_bytes_until_it_flows_again(echo_port: int) -> None:
    proxy = await _proxy(echo_port)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    proxy.configure(stalled=True)
    writer.write(b"held")
    await writer.drain()
    read = asyncio.ensure_future(reader.readexactly(4))
    # Give the proxy every chance to forward: it must not while stalled.
    for _ in range(50):
        await asyncio.sleep(0)
    assert not read.done()
    proxy.configure(stalled=False)
    assert await asyncio.wait_for(read, READ_BOUND) == b"held"
    writer.close()
    await proxy.close()


async def test_drop_resets_open_connections_and_new_ones_still_work(echo_port: int) -> None:
    proxy = await _proxy(echo_port)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"a")
    assert await asyncio.wait_for(reader.readexactly(1), READ_BOUND) == b"a"
    assert proxy.drop() == 2  # the client's side and the upstream side
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), READ_BOUND)
    writer.close()
    assert await _round_trip(proxy.port, b"again") == b"again"
    assert proxy.dropped == 2
    await proxy.close()


async def test_negative_latency_is_refused_naming_the_field(echo_port: int) -> None:
    proxy = await _proxy(echo_port)
    with pytest.raises(ValueError, match="latency_seconds must be >= 0"):
        proxy.configure(latency_seconds=-1)
    await proxy.close()


def test_the_threaded_proxy_is_driven_from_plain_code() -> None:
    async def serve() -> asyncio.Server:
        return await asyncio.start_server(_echo, "127.0.0.1", 0)

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(serve())
    echo_port = int(server.sockets[0].getsockname()[1])
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = ThreadedProxy(("127.0.0.1", 0), ("127.0.0.1", echo_port))
    try:
        proxy.configure(latency_seconds=0.0, stalled=False)
        # A connection held open across the drop (a closed one may still be
        # in the proxy's set until its pumps notice, so only an open one gives
        # a count that cannot race): one echo proves both sides are up, then
        # the drop resets both, and the client reads the end.
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as held:
            held.sendall(b"sync")
            assert held.recv(16) == b"sync"
            assert proxy.drop() == 2
            # A reset, rather than an orderly end, is a drop too.
            with contextlib.suppress(ConnectionResetError):
                assert held.recv(16) == b""
    finally:
        proxy.close()
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
