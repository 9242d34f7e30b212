"""Which transport carries the worker channel to an address: by its scheme.

Callers: ``testfleet worker`` hands the agent a :class:`SchemeConnector`, so a
worker given several coordinator addresses (``--coordinator A,B``) reaches
each over the transport its scheme names: ``ws://``/``wss://`` (the
addresses the agent derives from ``http(s)://``) over the WebSocket,
``grpc://``/``grpcs://`` over gRPC (``--grpc-port`` on the coordinator). A
standby reached over gRPC names the leader's HTTP address, which the worker
then reaches over the WebSocket: both transports serve one fleet.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from enum import StrEnum
from urllib.parse import urlsplit

from testfleet.protocol.channel import AddressError, Channel, Connector


class Transport(StrEnum):
    """What carries a worker's channel: named by ``LocalFleet``'s worker options
    and by ``benchmarks/dispatch.py --transport``."""

    WEBSOCKET = "websocket"
    GRPC = "grpc"


#: Schemes served by the gRPC connector; the rest go to the WebSocket one.
GRPC_SCHEMES = frozenset({"grpc", "grpcs"})
WEBSOCKET_SCHEMES = frozenset({"ws", "wss"})


def is_grpc_address(url: str) -> bool:
    """Whether ``url`` is a gRPC address (``grpc://`` or ``grpcs://``)."""
    return urlsplit(url.strip()).scheme in GRPC_SCHEMES


class SchemeConnector:
    """A :class:`~testfleet.protocol.channel.Connector` that hands each address to
    the connector for its scheme."""

    def __init__(self, websocket: Connector, grpc: Connector | None = None) -> None:
        self.websocket = websocket
        self.grpc = grpc

    def connect(self, url: str) -> AbstractAsyncContextManager[Channel]:
        scheme = urlsplit(url.strip()).scheme
        if scheme in GRPC_SCHEMES:
            if self.grpc is None:
                raise AddressError(f"{url!r}: this worker was not set up for gRPC addresses")
            return self.grpc.connect(url)
        if scheme in WEBSOCKET_SCHEMES:
            return self.websocket.connect(url)
        raise AddressError(
            f"{url!r}: the worker channel runs over ws(s):// or grpc(s)://, not {scheme}://"
        )
