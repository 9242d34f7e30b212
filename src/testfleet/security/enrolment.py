"""Enrolment tokens' rules: how long one lives, and what using one found.

An enrolment token (``Role.ENROL``, named by the worker id it may enrol) is
exchanged once, with a certificate signing request, for that worker's
certificate (``coordinator/enrolment_api.py``). Callers: ``testfleet tokens
create`` (both its ``--db`` path and, through the API, ``POST
/api/v1/tokens``) apply :func:`token_lifetime`; the store's
``consume_token`` answers with a :class:`TokenConsumption`.

Decisions:

* Short-lived by default (:data:`DEFAULT_ENROL_SECONDS`, an hour: long enough
  to copy it to a new machine and start the worker) and never long
  (:data:`MAX_ENROL_SECONDS`, a week): it is a bearer secret that turns into
  a worker identity, so a forgotten one must not stay usable for months.
* One use: the store marks it revoked in the very transaction that checks it
  (see ``Store.consume_token``), so two requests with one token cannot both
  get a certificate. A used token shows in ``tokens list`` as revoked at the
  time it was used.
"""

from __future__ import annotations

from enum import StrEnum

from testfleet.security.tokens import Role

#: Where ``testfleet worker`` also reads its enrolment token from.
ENROL_TOKEN_ENV = "TESTFLEET_ENROL_TOKEN"
#: An enrolment token's lifetime when none is asked for: one hour.
DEFAULT_ENROL_SECONDS = 3600.0
#: The longest an enrolment token may live: seven days.
MAX_ENROL_SECONDS = 7 * 86400.0


class TokenConsumption(StrEnum):
    """What using a one-time token found (``SecurityStore.consume_token``)."""

    #: It was usable, and is now used (revoked from this moment on).
    CONSUMED = "consumed"
    #: Used before, or revoked: either way not usable again.
    ALREADY_USED = "already_used"
    EXPIRED = "expired"
    #: No token of that id and role.
    UNKNOWN = "unknown"


def token_lifetime(role: Role, requested: float | None) -> float | None:
    """The lifetime in seconds a new ``role`` token gets when ``requested`` is asked
    (None: until revoked). An enrolment token gets :data:`DEFAULT_ENROL_SECONDS`
    when none is asked, and more than :data:`MAX_ENROL_SECONDS` is a
    ``ValueError`` saying the limit; other roles get what they ask."""
    if role is not Role.ENROL:
        return requested
    if requested is None:
        return DEFAULT_ENROL_SECONDS
    if requested > MAX_ENROL_SECONDS:
        raise ValueError(
            f"an enrol token lives at most 7 days ({MAX_ENROL_SECONDS:.0f} s), got "
            f"{requested:.0f} s; give a shorter lifetime (default: 1 hour)"
        )
    return requested
