"""Where the coordinator is, and the error every client call raises.

Callers: :mod:`testfleet.client` (which re-exports all of it), the CLI's
``--coordinator`` option and ``pytest --fleet``. :func:`normalize_coordinator_url`
turns what a person typed into one canonical base address or says what to
write instead (:func:`normalize_coordinator_urls`: a comma-separated list of
them, for several coordinators of which one leads); :class:`FleetError`
carries the coordinator's status, code and message (or ``unreachable``).
Kept apart from the client so that module holds only the calls.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_COORDINATOR = "http://127.0.0.1:8700"
COORDINATOR_ENV = "TESTFLEET_COORDINATOR"
#: Where the API lives under a coordinator's address.
API_PREFIX = "/api/v1"


class FleetError(Exception):
    """The coordinator refused a request, or could not be reached."""

    def __init__(
        self, message: str, *, status: int = 0, code: str = "unreachable", details: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or []


class CoordinatorUrlError(FleetError):
    """A coordinator URL that cannot be used; the message says what to write instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_url")


def normalize_coordinator_url(url: str) -> str:
    """The coordinator's base address in one canonical form, or :class:`CoordinatorUrlError`.

    Called by :func:`coordinator_url` for every URL a person gives (``--coordinator``,
    ``$TESTFLEET_COORDINATOR``, ``pytest --fleet``). Decisions, documented in the
    README: ``HOST:PORT`` without a scheme means ``http://HOST:PORT`` (what people
    type most); a trailing ``/api/v1`` is dropped, since the client adds it
    itself (the API's address pasted from the docs); anything deeper inside the
    API, or a scheme other than http/https, is refused saying what to write.
    """
    text = url.strip()
    example = "e.g. http://HOST:8700"
    if not text:
        raise CoordinatorUrlError(f"the coordinator URL is empty; give one, {example}")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise CoordinatorUrlError(
            f"coordinator URL {url!r}: use http:// or https://, not {parts.scheme}:// ({example}; "
            "workers derive their WebSocket address from it)"
        )
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise CoordinatorUrlError(
            f"coordinator URL {url!r}: the port is not a number from 0 to 65535 ({example})"
        ) from None
    if not parts.hostname:
        raise CoordinatorUrlError(f"coordinator URL {url!r} has no host name ({example})")
    if parts.query or parts.fragment:
        raise CoordinatorUrlError(
            f"coordinator URL {url!r}: drop the ?query or #fragment; give only the "
            f"coordinator's address ({example})"
        )
    path = parts.path.rstrip("/")
    if path.endswith(API_PREFIX):
        path = path[: -len(API_PREFIX)]
    elif API_PREFIX + "/" in path + "/":
        base = urlunsplit((parts.scheme, parts.netloc, path[: path.index(API_PREFIX)], "", ""))
        raise CoordinatorUrlError(
            f"coordinator URL {url!r} points inside the API; give the coordinator's "
            f"address instead: {base}"
        )
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def normalize_coordinator_urls(text: str) -> tuple[str, ...]:
    """Every address of a comma-separated list, each in canonical form, duplicates
    dropped, in the order given; or :class:`CoordinatorUrlError`.

    Called by :func:`coordinator_url` and :class:`~testfleet.coordinator_addresses.
    CoordinatorAddresses`. Several coordinators share one PostgreSQL store and one
    leads (README, "Several coordinators"); clients are given all their
    addresses and follow the leader. One address is checked exactly as before,
    so its messages are unchanged; an empty entry in a list (``a,,b``, a
    trailing comma) is refused, naming its place, rather than skipped: it is
    usually a variable that was meant to hold an address.
    """
    entries = text.split(",")
    if len(entries) == 1:
        return (normalize_coordinator_url(text),)
    addresses: list[str] = []
    for place, entry in enumerate(entries, start=1):
        if not entry.strip():
            raise CoordinatorUrlError(
                f"--coordinator / ${COORDINATOR_ENV} {text!r}: entry {place} is empty; separate "
                "addresses with single commas, e.g. http://HOST-A:8700,http://HOST-B:8700"
            )
        address = normalize_coordinator_url(entry)
        if address not in addresses:
            addresses.append(address)
    return tuple(addresses)


def coordinator_url(explicit: str | None = None) -> str:
    """``--coordinator``, else ``$TESTFLEET_COORDINATOR``, else the local default,
    normalised by :func:`normalize_coordinator_urls` (which may refuse it): one
    canonical address, or several joined by commas (what commands hand on to
    workers and ``pytest --fleet``)."""
    return ",".join(
        normalize_coordinator_urls(
            explicit or os.environ.get(COORDINATOR_ENV) or DEFAULT_COORDINATOR
        )
    )
