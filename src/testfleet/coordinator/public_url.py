"""The coordinator's public URL: the address people and tools reach it at.

Callers: ``testfleet coordinator --public-url`` checks the flag with
:func:`check_public_url` (a bad one ends the command with one line naming the
flag); :func:`~testfleet.coordinator.app.run_coordinator` fills it in with
:func:`derive_public_url` when the flag is not given. The alert notifier puts it
in what it sends (Alertmanager's ``externalURL`` and ``generatorURL``, a link in
Slack messages), so a person reading a notification can click through to the
dashboard's alerts page.

Decision: when unset it is derived from the bind address and the scheme
(``https`` with TLS). A wildcard bind (``0.0.0.0``, ``::``) names no
address a receiver can reach, so the machine's fully qualified host name
stands in; behind a proxy or a NAT only ``--public-url`` can be right.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

#: Bind addresses that mean "every interface", not an address to link to.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})

EXAMPLE = "https://fleet.example.com:8443"


class PublicUrlError(ValueError):
    """A ``--public-url`` that is not an absolute http(s) URL; the message names the fix."""


def check_public_url(value: str, *, flag: str = "--public-url") -> str:
    """``value`` checked and normalised (no trailing slash), or :class:`PublicUrlError`."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a port that is no number in range
    except ValueError as exc:
        raise PublicUrlError(
            f"{flag}: {value!r} is not a URL ({exc}); give e.g. {EXAMPLE}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PublicUrlError(
            f"{flag}: {value!r} is not an http(s) URL with a host; give the address people "
            f"reach the coordinator at, e.g. {EXAMPLE}"
        )
    if parts.username is not None or parts.password is not None:
        raise PublicUrlError(f"{flag}: {value!r} holds credentials; give the URL without them")
    if parts.query or parts.fragment:
        raise PublicUrlError(
            f"{flag}: {value!r} has a query or fragment; give only scheme, host, port and path"
        )
    return text.rstrip("/")


def derive_public_url(host: str, port: int, *, tls: bool) -> str:
    """The URL for a coordinator bound to ``host``:``port`` (see the module docstring)."""
    name = socket.getfqdn() if host in WILDCARD_HOSTS else host
    shown = f"[{name}]" if ":" in name and not name.startswith("[") else name
    return f"{'https' if tls else 'http'}://{shown}:{port}"
