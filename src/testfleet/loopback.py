"""Whether an address or a host name is this machine only: the one loopback test.

Callers: the coordinator's start-up (``coordinator/exposure.py``: may plain
HTTP listen on ``--host``?), its worker channel (``coordinator/worker_credentials.py``:
may a worker token come over plain HTTP from this peer?) and a worker's
enrolment (``worker/enrolment.py``: may an enrolment token go to this
``http://`` address?). Each used to carry its own copy, and the copies
disagreed on IPv4-mapped IPv6 and on ``localhost``.

Loopback is 127.0.0.0/8 and ``::1``, IPv4-mapped forms (``::ffff:127.0.0.1``)
included, in brackets or not. A *host* may also be the name ``localhost``; a
peer's *address* (what the server saw) is never a name.
"""

from __future__ import annotations

import ipaddress

#: Names that always mean this machine (resolved or not).
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def is_loopback_address(address: str | None) -> bool:
    """Whether ``address``, an IP literal, is a loopback address (a name, ``""`` or
    None is not)."""
    if not address:
        return False
    try:
        parsed = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped.is_loopback
    return parsed.is_loopback


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (an address or a name, as given to ``--host`` or in a URL)
    reaches this machine only. ``0.0.0.0``, ``::`` and ``""`` mean every
    interface, and any other name may resolve anywhere: neither is loopback."""
    if host is None:
        return False
    name = host.strip().lower()
    return name in LOOPBACK_NAMES or is_loopback_address(name)
