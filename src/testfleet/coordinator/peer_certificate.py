"""The worker's TLS client certificate, made visible to the app's WebSocket route.

Callers: :func:`testfleet.coordinator.app.run_coordinator` wraps uvicorn's
WebSocket protocol class with :func:`with_peer_certificate` when it serves
TLS; the worker channel endpoint reads what it adds with
:func:`peer_certificate_der`.

Why: uvicorn verifies a client certificate during the handshake but does not
put it into the ASGI scope (it has no ``tls`` extension), and the scope is the
only thing a route sees. The subclass below overrides one method of whatever
WebSocket implementation uvicorn picked: on ``connection_made`` it reads the
peer certificate from the TLS transport (``get_extra_info("ssl_object")``) and
wraps the app the protocol calls so that the scope carries it as the ASGI TLS
extension describes it (``scope["extensions"]["tls"]["client_cert_chain"]``,
PEM strings, leaf first; only the leaf is available from Python's ``ssl``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
_ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def with_peer_certificate(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """``base`` (a uvicorn WebSocket protocol class) that adds the ASGI ``tls`` extension."""
    base_class: Any = base

    class PeerCertificateProtocol(base_class):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            # asyncio's transports hand an ssl.SSLObject, uvloop's its own
            # object with the same getpeercert(); plain HTTP hands None.
            getpeercert = getattr(transport.get_extra_info("ssl_object"), "getpeercert", None)
            der = getpeercert(binary_form=True) if getpeercert is not None else None
            chain = [ssl.DER_cert_to_PEM_cert(der)] if der else []
            inner: _ASGIApp = self.app  # type: ignore[has-type]

            async def app(scope: Scope, receive: Any, send: Any) -> None:
                extensions = dict(scope.get("extensions") or {})
                extensions["tls"] = {"client_cert_chain": chain}
                scope["extensions"] = extensions
                await inner(scope, receive, send)

            self.app = app

    PeerCertificateProtocol.__name__ = f"PeerCertificate{base.__name__}"
    return PeerCertificateProtocol


def peer_certificate_der(scope: Scope) -> bytes | None:
    """The client certificate (DER) the TLS layer verified, or None (no TLS, none sent)."""
    tls = (scope.get("extensions") or {}).get("tls")
    if not isinstance(tls, dict):
        return None
    chain = tls.get("client_cert_chain")
    if not chain:
        return None
    return ssl.PEM_cert_to_DER_cert(chain[0])
