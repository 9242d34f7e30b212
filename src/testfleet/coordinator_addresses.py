"""Which of several coordinator addresses a client talks to now, and where it goes next.

Callers: :class:`testfleet.client.FleetClient` (every REST call of the CLI,
``testfleet run`` and ``pytest --fleet``) and the worker agent's connection
loop (``worker/agent.py``). With coordinator failover (issue 13) several
coordinators share one PostgreSQL store; one leads and the others are
standbys, which answer every API call with 503 ``not_leader`` and close the
worker channel with code 4010, naming the leader when they know it. A client
is given all the addresses (``--coordinator A,B``); this type holds them and
the rules for moving between them, so the HTTP client and the worker follow
the leader the same way:

- a standby named the leader: go there (adding it to the list if it is new:
  the leader may have been started at an address nobody listed);
- a standby named nobody, or an address could not be reached: the next one;
- every address failed in turn since the last one that served: a full round
  has failed, and the caller pauses (its backoff) before the next round.

Pure: no I/O, no clock; the caller decides how long to wait between rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from testfleet.client_address import (
    CoordinatorUrlError,
    normalize_coordinator_url,
    normalize_coordinator_urls,
)

#: The error code a standby answers every API call with (HTTP 503).
NOT_LEADER_CODE = "not_leader"
#: What a standby's ``GET /health`` says its status is (HTTP 503).
STANDBY_STATUS = "standby"
#: The header in which a standby names the leader's address (absent when unknown).
LEADER_HEADER = "x-testfleet-leader"


class CoordinatorAddresses:
    """The ordered addresses of one fleet's coordinators and the one in use.

    Built from what a person gave (:meth:`parse`) or from addresses already
    normalised. :meth:`reached`, :meth:`failed` and :meth:`not_leader` are
    called after each try; the last two say whether the try ended a full round.
    """

    def __init__(self, addresses: Sequence[str]) -> None:
        if not addresses:
            raise ValueError("CoordinatorAddresses needs at least one address")
        self._addresses = list(dict.fromkeys(addresses))
        self._index = 0
        #: Tries that failed or were turned away since an address last served.
        self._misses = 0

    @classmethod
    def parse(cls, text: str) -> CoordinatorAddresses:
        """The comma-separated ``text`` (``--coordinator``), each entry normalised;
        :class:`~testfleet.client_address.CoordinatorUrlError` says what is wrong."""
        return cls(normalize_coordinator_urls(text))

    @classmethod
    def listed(cls, text: str) -> CoordinatorAddresses:
        """The comma-separated ``text`` as it is (the worker agent's setting, which
        the CLI has normalised); empty entries are dropped, not refused."""
        return cls([part.strip() for part in text.split(",") if part.strip()] or [text])

    @property
    def current(self) -> str:
        """The address to try now."""
        return self._addresses[self._index]

    @property
    def all(self) -> tuple[str, ...]:
        """Every address known, in order (those given, then leaders learnt of)."""
        return tuple(self._addresses)

    def __len__(self) -> int:
        return len(self._addresses)

    @property
    def several(self) -> bool:
        """More than one address to go to."""
        return len(self._addresses) > 1

    def reached(self) -> None:
        """The current address served (the leader answered): the next failure
        starts a new round."""
        self._misses = 0

    def failed(self) -> bool:
        """The current address could not be reached: move to the next one. True when
        every address has now failed in turn since one last served (a full round)."""
        self._index = (self._index + 1) % len(self._addresses)
        return self._count_miss()

    def not_leader(self, leader: str | None) -> bool:
        """The current address is a standby that named ``leader`` (None: nobody, or
        an address that cannot be used). Go there, adding it if new, else to the
        next address. True when this ends a full round: standbys pointing at each
        other during an election must not send the caller round in circles
        without a pause."""
        target = _usable(leader)
        if target is None or target == self.current:
            self._index = (self._index + 1) % len(self._addresses)
        else:
            if target not in self._addresses:
                self._addresses.append(target)
            self._index = self._addresses.index(target)
        return self._count_miss()

    def _count_miss(self) -> bool:
        self._misses += 1
        return self._misses % len(self._addresses) == 0


def _usable(leader: str | None) -> str | None:
    """``leader`` normalised, or None when it is missing or not an address."""
    if not leader:
        return None
    try:
        return normalize_coordinator_url(leader)
    except CoordinatorUrlError:
        return None


def leader_named(body: Mapping[str, Any] | None, headers: Mapping[str, str]) -> str | None:
    """The leader a standby's 503 ``not_leader`` answer names: its
    ``X-Testfleet-Leader`` header, else ``details[0].leader`` of the error body;
    None when it names nobody (no leader elected yet)."""
    named = headers.get(LEADER_HEADER)
    if named:
        return named
    if body is not None and isinstance(body.get("leader"), str):  # GET /health of a standby
        return str(body["leader"]) or None
    error = None if body is None else body.get("error")
    details = error.get("details") if isinstance(error, dict) else None
    if isinstance(details, list) and details and isinstance(details[0], dict):
        leader = details[0].get("leader")
        if isinstance(leader, str) and leader:
            return leader
    return None


def is_not_leader(status: int, body: Mapping[str, Any] | None) -> bool:
    """Whether an answer is a standby's "I am not the leader": 503 ``not_leader``, or
    503 ``{"status": "standby"}`` from ``GET /health``."""
    if status != 503 or body is None:
        return False
    error = body.get("error")
    if isinstance(error, dict):
        return error.get("code") == NOT_LEADER_CODE
    return body.get("status") == STANDBY_STATUS
