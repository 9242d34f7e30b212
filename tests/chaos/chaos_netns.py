"""A worker's own network namespace, joined to this machine by a veth pair.

Used by the chaos harness (``chaos_fleet.py``) to partition a single worker:
taking the host side of its veth pair down drops every packet both ways
while the worker's sockets stay open, which is what a real partition looks
like (no FIN, no RST; only silence).

Each namespace gets a /30 of its own in 10.213.0.0/16, private to this
machine's namespaces: the host side is ``.1``, the namespace side ``.2``.
The third octet comes from this process's id and the worker's index, so two
runs side by side do not collide.

The project requires namespaces for the chaos suite (we run as root in CI):
:class:`NamespacesUnavailable` says so and fails the run, never skips it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

#: The private block the veth pairs take their /30s from.
PREFIX = "10.213"


class NamespacesUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, no ``ip``, a sandbox)."""


@dataclass(frozen=True)
class Namespace:
    """One namespace and its veth pair: ``host_if`` here, ``ns_if`` inside."""

    name: str
    host_if: str
    ns_if: str
    host_address: str
    ns_address: str

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        """Words that run a command inside the namespace (``ip netns exec`` execs it:
        the process keeps its pid, so signals reach the command itself)."""
        return ("ip", "netns", "exec", self.name)


def _ip(*args: str) -> None:
    try:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NamespacesUnavailable(
            "the chaos suite needs the `ip` command (Debian package iproute2) to make "
            "network namespaces"
        ) from None
    except subprocess.CalledProcessError as exc:
        raise NamespacesUnavailable(
            f"`ip {' '.join(args)}` failed ({exc.stderr.strip()}): the chaos suite needs "
            "network namespaces and veth pairs; run it as root on a Linux host that allows them"
        ) from None


def create(index: int) -> Namespace:
    """Make namespace number ``index`` (0-63) with its veth pair, addressed and up."""
    if not 0 <= index < 64:
        raise ValueError(f"index must be in 0..63, not {index}")
    tag = os.getpid() % 100000
    octet = (os.getpid() % 4) * 64 + index
    namespace = Namespace(
        name=f"tfchaos-{tag}-{index}",
        host_if=f"tfc{tag}h{index}",
        ns_if=f"tfc{tag}n{index}",
        host_address=f"{PREFIX}.{octet}.1",
        ns_address=f"{PREFIX}.{octet}.2",
    )
    delete(namespace)  # a leftover of a killed run with the same pid
    _ip("netns", "add", namespace.name)
    try:
        _ip("link", "add", namespace.host_if, "type", "veth", "peer", "name", namespace.ns_if)
        _ip("link", "set", namespace.ns_if, "netns", namespace.name)
        _ip("addr", "add", f"{namespace.host_address}/30", "dev", namespace.host_if)
        _ip("link", "set", namespace.host_if, "up")
        inside = ("-n", namespace.name)
        _ip(*inside, "addr", "add", f"{namespace.ns_address}/30", "dev", namespace.ns_if)
        _ip(*inside, "link", "set", namespace.ns_if, "up")
        _ip(*inside, "link", "set", "lo", "up")
    except BaseException:
        delete(namespace)
        raise
    return namespace


def set_link(namespace: Namespace, up: bool) -> None:
    """Partition the namespace (``up=False``: every packet dropped) or heal it."""
    _ip("link", "set", namespace.host_if, "up" if up else "down")


def delete(namespace: Namespace) -> None:
    """Remove the namespace and its pair (idempotent; deleting one end removes both)."""
    for args in (("link", "del", namespace.host_if), ("netns", "del", namespace.name)):
        subprocess.run(["ip", *args], capture_output=True, timeout=30, check=False)


def delete_all(namespaces: Sequence[Namespace]) -> None:
    for namespace in namespaces:
        delete(namespace)
