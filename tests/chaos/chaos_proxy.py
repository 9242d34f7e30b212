"""A TCP proxy that plays a bad network link, reconfigurable while it runs.

Used by the chaos harness (``chaos_fleet.py``) between a worker and the
coordinator: ``tc netem`` is not on this kernel, so latency, stalls and
dropped connections are made here instead. The harness runs one
:class:`ThreadedProxy` per network-namespaced worker on the host side of its
veth pair, and the worker's namespace runs this module as a plain forwarder
(``python chaos_proxy.py --listen HOST:PORT --target HOST:PORT``) so that the
worker can dial ``127.0.0.1`` there, which keeps TLS's host name check as on
any other worker.

Bytes are forwarded unchanged (TLS passes through end to end). Each
direction of each connection is one pump that reads a chunk, waits for the
link to flow (a *stall* holds every chunk, like a partition that keeps
sockets open), sleeps the configured *latency*, and writes. *Drop* aborts
every open connection with a reset, as a broken middlebox would.

This module imports nothing from the project: it must run as a script inside
a namespace with only the interpreter's standard library on its path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

#: Bytes read per chunk; small enough that latency applies per message, not per megabyte.
CHUNK_BYTES = 65536

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


@dataclass
class LinkSettings:
    """What the link does now; changed live by :meth:`Proxy.configure`."""

    latency_seconds: float = 0.0
    stalled: bool = False


class Proxy:
    """Forward connections accepted on ``listen`` to ``target``, through a bad link.

    ``sleep`` is how latency waits (``asyncio.sleep``; a unit test passes a
    recorder so nothing waits on wall time). Every method runs on the
    proxy's own event loop; :class:`ThreadedProxy` is the thread-safe face.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.listen = listen
        self.target = target
        self.settings = LinkSettings()
        self._sleep = sleep
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Connections accepted and dropped so far (figures and tests).
        self.accepted = 0
        self.dropped = 0

    @property
    def port(self) -> int:
        """The port it listens on (useful when ``listen`` asked for port 0)."""
        assert self._server is not None, "start the proxy first"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self.listen)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def configure(
        self, *, latency_seconds: float | None = None, stalled: bool | None = None
    ) -> None:
        """Change the link for every open and future connection."""
        if latency_seconds is not None:
            if latency_seconds < 0:
                raise ValueError(f"latency_seconds must be >= 0, not {latency_seconds}")
            self.settings.latency_seconds = latency_seconds
        if stalled is not None:
            self.settings.stalled = stalled
            if stalled:
                self._flowing.clear()
            else:
                self._flowing.set()

    def drop(self) -> int:
        """Reset every open connection (both sides); returns how many sockets were reset."""
        count = 0
        for writer in list(self._writers):
            _reset(writer)
            count += 1
        self._writers.clear()
        self.dropped += count
        return count

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._writers |= {writer, up_writer}
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer)),
            asyncio.ensure_future(self._pump(up_reader, writer)),
        ]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        # Either side closing ends the pair: a half-open connection would hide a drop.
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for side in (writer, up_writer):
            self._writers.discard(side)
            with contextlib.suppress(Exception):
                side.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    return
                await self._flowing.wait()
                if self.settings.latency_seconds > 0:
                    await self._sleep(self.settings.latency_seconds)
                # Held across a stall that began during the sleep as well.
                await self._flowing.wait()
                if writer.is_closing():
                    return
                writer.write(data)
                await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), not a FIN: what a dropped link looks like."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ThreadedProxy:
    """A :class:`Proxy` on an event loop of its own thread, driven from plain code.

    The chaos harness is synchronous (it starts processes and sleeps between
    faults); this runs the proxy beside it and forwards calls thread-safely.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = self._call(self._make(listen, target))

    async def _make(self, listen: tuple[str, int], target: tuple[str, int]) -> Proxy:
        proxy = Proxy(listen, target)
        await proxy.start()
        return proxy

    def _call(self, coroutine: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(30)

    @property
    def port(self) -> int:
        return self.proxy.port

    def configure(
        self, *, latency_seconds: float | None = None, stalled: bool | None = None
    ) -> None:
        async def apply() -> None:
            self.proxy.configure(latency_seconds=latency_seconds, stalled=stalled)

        self._call(apply())

    def drop(self) -> int:
        async def apply() -> int:
            return self.proxy.drop()

        return self._call(apply())

    def close(self) -> None:
        if not self._loop.is_closed():
            self._call(self.proxy.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host, int(port)


async def _serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    proxy = Proxy(listen, target)
    await proxy.start()
    print(f"forwarding {listen[0]}:{proxy.port} -> {target[0]}:{target[1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    """A plain forwarder, run inside a worker's network namespace by the harness."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_address, required=True)
    parser.add_argument("--target", type=_address, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.listen, args.target))


if __name__ == "__main__":
    main()
