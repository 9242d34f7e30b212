"""Send one REST request to whichever of several coordinators leads now.

Callers: :class:`testfleet.client.FleetClient`, for every call it makes (the
CLI's commands, ``testfleet run`` / ``pytest --fleet``, ``testfleet demo``).
A standby answers 503 ``not_leader`` naming the leader; an address may not be
reachable at all. :class:`LeaderRequests` tries the addresses as
:class:`~testfleet.coordinator_addresses.CoordinatorAddresses` says (the named
leader, else the next address), pausing between full rounds, and gives up
after a bounded number of them with one :class:`FleetError` naming every
address tried. Any other answer, refusals included, is handed back as it is:
judging it is the client's business.

Retrying elsewhere is safe when the request cannot have been acted on: a
standby's 503 (a standby changes nothing), or a connection that was never
made. A request that was sent and then lost (a reset, a read timeout) may have
been committed by a leader that died after it, so it is retried elsewhere only
when it is a read (GET, HEAD). A submission is not: ids chosen by the
coordinator would make a second try a second task. ``testfleet run`` chooses
its task ids itself and resubmits on its own, taking ``duplicate_task_id`` as
"already done" (``fleetrun/run.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from testfleet.client_address import API_PREFIX, COORDINATOR_ENV, FleetError
from testfleet.coordinator_addresses import (
    NOT_LEADER_CODE,
    CoordinatorAddresses,
    is_not_leader,
    leader_named,
)

#: Full rounds of the addresses before a call gives up on finding a leader.
DEFAULT_ROUNDS = 3
#: The pause after the first failed round; it doubles after each further one.
ROUND_PAUSE_SECONDS = 0.5
#: Methods that change nothing, so that a try whose answer was lost may be sent again.
_READS = frozenset({"GET", "HEAD"})


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The response's body when it is a JSON object, else ``None`` (HTML, text, a list)."""
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _never_sent(exc: httpx.HTTPError) -> bool:
    """Whether ``exc`` means no byte of the request reached a server."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


class LeaderRequests:
    """Sends requests over one ``httpx.Client`` to the leader among ``addresses``."""

    def __init__(
        self,
        http: httpx.Client,
        addresses: CoordinatorAddresses,
        *,
        rounds: int = DEFAULT_ROUNDS,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        """``sleep`` paces the rounds (tests pass one that records instead of waiting)."""
        self._http = http
        self.addresses = addresses
        self._rounds = max(1, rounds)
        self._sleep = sleep

    def send(
        self, method: str, path: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """The answer to ``method path`` (under ``/api/v1``) from the first address that is
        not a standby; with ``stream`` its body is not read yet (the caller closes it).
        Raises :class:`FleetError` (``unreachable``, or ``not_leader`` with status 503
        when only standbys answered) after :data:`DEFAULT_ROUNDS` full rounds."""
        unreachable: dict[str, str] = {}
        standbys: dict[str, str | None] = {}
        rounds = 0
        while True:
            address = self.addresses.current
            request = self._http.build_request(method, address + API_PREFIX + path, **kwargs)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.HTTPError as exc:
                if not (_never_sent(exc) or method in _READS):
                    raise self._unreachable({address: str(exc)}) from None
                unreachable[address] = str(exc)
                standbys.pop(address, None)
                round_over = self.addresses.failed()
            else:
                if response.status_code != 503:
                    self.addresses.reached()
                    return response
                if stream:
                    response.read()
                body = json_object(response)
                if not is_not_leader(response.status_code, body):
                    self.addresses.reached()
                    return response
                response.close()
                leader = leader_named(body, response.headers)
                standbys[address] = leader
                unreachable.pop(address, None)
                round_over = self.addresses.not_leader(leader)
            if round_over:
                rounds += 1
                # Only unreachable addresses: nothing is there to wait for (what a
                # single address has always done: fail at once). Standbys: a leader
                # is being elected; wait for it a little.
                if not standbys:
                    raise self._unreachable(unreachable)
                if rounds >= self._rounds:
                    raise self._no_leader(standbys, unreachable)
                self._sleep(ROUND_PAUSE_SECONDS * 2 ** (rounds - 1))

    def _unreachable(self, failures: dict[str, str]) -> FleetError:
        where = f"Set --coordinator or ${COORDINATOR_ENV}."
        if len(failures) == 1 and len(self.addresses) == 1:
            # One address: the message it has always had.
            ((address, problem),) = failures.items()
            return FleetError(
                f"cannot reach the coordinator at {address}: {problem}. Is it running? {where}"
            )
        tried = "; ".join(f"{address}: {problem}" for address, problem in failures.items())
        return FleetError(
            f"cannot reach a coordinator at {', '.join(self.addresses.all)} ({tried}). "
            f"Is one running? {where}"
        )

    def _no_leader(
        self, standbys: dict[str, str | None], unreachable: dict[str, str]
    ) -> FleetError:
        said = ", ".join(
            f"{address} (leader: {leader or 'none yet'})" for address, leader in standbys.items()
        )
        message = f"no coordinator is leading: standbys at {said}"
        if unreachable:
            message += f"; unreachable: {', '.join(unreachable)}"
        message += (
            f" (tried {', '.join(self.addresses.all)}). A leader is elected within the "
            "coordinators' --lease-seconds; retry shortly, or check that one can reach the store."
        )
        return FleetError(message, status=503, code=NOT_LEADER_CODE)
