"""Secure by default: may the coordinator listen where it was asked to, and how?

Callers: ``testfleet coordinator`` (``cli/processes.py``) calls
:func:`decide_exposure` before it binds anything, refuses to start with the
decision's one-line ``refusal``, and logs its ``notices`` once the checks
pass. A pure function of the command's flags (no sockets, no clock), so the
rule is tested case by case without a server.

The rule: plain HTTP is for loopback only. On any other address tokens, task
documents and results would cross the network in the clear, and a worker
could not know it reached the real coordinator; so a non-loopback ``--host``
without ``--tls-cert``/``--tls-key`` is refused, naming the flags to add,
unless the operator says ``--insecure`` (a lab on a closed network, a
throwaway test), and then every start says so in the log. TLS without
``--client-ca`` is allowed anywhere: workers then join with per-worker tokens,
and the log says which way workers authenticate, so nobody believes worker
certificates are checked when they are not.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from testfleet.loopback import is_loopback_host as is_loopback

#: Host names that always mean this machine. Any other name may resolve to a
#: public address (or change to one), so it counts as reachable from outside.


class NoticeLevel(enum.Enum):
    """How loudly a start-up notice is logged."""

    #: Worth knowing: how workers authenticate.
    INFO = "info"
    #: Said at every start because it weakens the fleet: ``--insecure``.
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Notice:
    """One line the coordinator logs at start-up."""

    level: NoticeLevel
    message: str


@dataclass(frozen=True, slots=True)
class ExposureDecision:
    """What start-up does: refuse with ``refusal`` (one line), or start and log ``notices``."""

    refusal: str | None
    notices: tuple[Notice, ...] = ()


def decide_exposure(host: str, *, tls: bool, client_ca: bool, insecure: bool) -> ExposureDecision:
    """Whether a coordinator may listen on ``host`` with these flags, and what to log.

    ``tls``: ``--tls-cert``/``--tls-key`` given (and checked); ``client_ca``:
    ``--client-ca`` given; ``insecure``: ``--insecure`` given.
    """
    loopback = is_loopback(host)
    if not tls and not loopback and not insecure:
        return ExposureDecision(
            refusal=(
                f"--host {host} is reachable from other machines, and plain HTTP would send "
                "tokens and tasks in the clear: add --tls-cert/--tls-key (from `testfleet "
                "certs server`) and --client-ca for worker certificates, or pass --insecure "
                "to serve plain HTTP anyway"
            )
        )
    notices: list[Notice] = []
    if insecure:
        if not tls and not loopback:
            said = (
                f"--insecure: serving plain HTTP on {host}, reachable from other machines; "
                "tokens, tasks and results cross the network unencrypted and workers may "
                "join with tokens from any address. Serve TLS (--tls-cert/--tls-key) instead"
            )
        else:
            said = (
                "--insecure: workers may join with worker tokens over plain HTTP from any "
                "address, not only from this machine"
            )
        notices.append(Notice(NoticeLevel.WARNING, said))
    notices.append(Notice(NoticeLevel.INFO, _worker_authentication(tls, client_ca, loopback)))
    return ExposureDecision(refusal=None, notices=tuple(notices))


def _worker_authentication(tls: bool, client_ca: bool, loopback: bool) -> str:
    """One line saying how workers prove who they are with these flags."""
    if tls and client_ca:
        return (
            "workers authenticate with certificates from --client-ca (a worker's id is the "
            "one in its certificate) or with worker tokens"
        )
    if tls:
        return (
            "workers authenticate with worker tokens (`testfleet tokens create --role worker "
            "--name ID`); no --client-ca, so no worker certificate is asked for"
        )
    where = "this machine" if loopback else "any address (--insecure)"
    return (
        f"workers authenticate with worker tokens over plain HTTP, from {where}; "
        "serve TLS (--tls-cert/--tls-key) for workers on other machines"
    )
