"""API tokens: how a secret is made, stored, recognised and checked.

Callers: ``testfleet tokens create --db`` (the first admin token, written
straight into the database file), the admin API (later tokens), and the
coordinator's auth dependency (``coordinator/auth.py``), which checks the
presented secret on every request.

Decisions:

* A secret is ``tfk_<token id>_<32 random bytes, URL-safe base64>``. The prefix
  makes a leaked secret recognisable (secret scanners, log greps); the id in
  it lets the coordinator look up one row instead of hashing against all of
  them; the random part (256 bits from :mod:`secrets`) is the credential.
* Only a SHA-256 hash of the secret is stored. A slow password hash (bcrypt,
  scrypt) protects *low-entropy* secrets that an attacker with the database
  could guess; a 256-bit random secret cannot be guessed, so one fast hash is
  as safe and keeps the check (done on every request) cheap.
* Hashes are compared with :func:`hmac.compare_digest` (constant time), so the
  time an answer takes says nothing about how much of a guess was right.
* Expiry and revocation are checked on every request against the stored row;
  nothing is cached, so a revoke takes effect on the very next request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

#: Every secret starts with this: recognisable in a leaked config or a log.
TOKEN_PREFIX = "tfk_"
_ID_HEX_CHARS = 16
_SECRET_RE = re.compile(rf"^{TOKEN_PREFIX}(tok-[0-9a-f]{{{_ID_HEX_CHARS}}})_[A-Za-z0-9_-]{{43}}$")
#: How long a token name may be (it is shown in tables and the audit log). As
#: long as a worker id, since a worker or enrol token's name is one.
MAX_NAME_LENGTH = 128
#: What a token name may be (also the API's JSON Schema ``pattern`` for it):
#: every such name is also a valid worker id (``security/pki.py``).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = (
    "a token name is 1 to 128 letters, digits, '.', '_', ':', '@' or '-', starting with a "
    "letter or digit (for a worker or enrol token, the worker's id)"
)


class Role(StrEnum):
    """What a token may do.

    The API roles form a chain (viewer, submitter, admin): each includes the
    ones before it. The two machine roles stand apart and include only
    themselves, so a leaked worker credential cannot read or change anything
    through the REST API: a ``worker`` token lets one worker, named by the
    token's name, open the worker channel; an ``enrol`` token lets one worker,
    named by the token's name, exchange a certificate request for a
    certificate, once.
    """

    #: Read everything: tasks, workers, results, stats, the API document.
    VIEWER = "viewer"
    #: Also submit tasks, and cancel the tasks it submitted.
    SUBMITTER = "submitter"
    #: Everything: drain workers, cancel anyone's tasks, tokens, audit, SQL and export.
    ADMIN = "admin"
    #: One worker's credential for the worker channel; the token's name is its id.
    WORKER = "worker"
    #: A one-time credential to enrol the worker named by the token's name.
    ENROL = "enrol"

    @property
    def binds_worker(self) -> bool:
        """Whether the token's name is a worker id it is bound to."""
        return self in (Role.WORKER, Role.ENROL)

    def includes(self, required: Role) -> bool:
        """Whether a token of this role may do what ``required`` may."""
        if self.binds_worker or required.binds_worker:
            return self is required
        return _API_CHAIN.index(self) >= _API_CHAIN.index(required)


#: The API roles, least to most.
_API_CHAIN = (Role.VIEWER, Role.SUBMITTER, Role.ADMIN)


class TokenCheck(StrEnum):
    """The verdict on a presented secret; everything but ``valid`` is a 401."""

    VALID = "valid"
    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    WRONG_SECRET = "wrong_secret"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One row of ``api_tokens``: everything about a token except its secret."""

    token_id: str
    name: str
    role: Role
    #: SHA-256 of the whole secret, hex (see the module docstring).
    secret_hash: str
    created: float
    expires: float | None = None
    revoked: float | None = None

    def check(self, secret: str, now: float) -> TokenCheck:
        """Whether ``secret`` is this token's and the token is usable at ``now``."""
        if not hmac.compare_digest(hash_secret(secret), self.secret_hash):
            return TokenCheck.WRONG_SECRET
        if self.revoked is not None:
            return TokenCheck.REVOKED
        if self.expires is not None and now >= self.expires:
            return TokenCheck.EXPIRED
        return TokenCheck.VALID


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: its row, and the secret shown once to whoever created it."""

    record: TokenRecord
    secret: str


def hash_secret(secret: str) -> str:
    """The stored form of a secret (SHA-256, hex)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def token_id_of(secret: str) -> str | None:
    """The token id inside a well-formed secret, or None for anything else."""
    match = _SECRET_RE.match(secret)
    return match.group(1) if match else None


def check_name(name: str) -> str:
    """``name`` if it is a usable token name, else ``ValueError`` saying the rule."""
    if not _NAME_RE.match(name):
        raise ValueError(f"{NAME_RULE}; got {name[:120]!r}")
    return name


def issue_token(
    name: str, role: Role, now: float, *, expires_in_seconds: float | None = None
) -> IssuedToken:
    """Make a new token named ``name`` (checked) with ``role``, valid from ``now``
    for ``expires_in_seconds`` (None: until revoked)."""
    check_name(name)
    if expires_in_seconds is not None and not expires_in_seconds > 0:
        raise ValueError(f"a token must expire after a positive time, got {expires_in_seconds}")
    token_id = f"tok-{secrets.token_hex(_ID_HEX_CHARS // 2)}"
    secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    expires = None if expires_in_seconds is None else now + expires_in_seconds
    record = TokenRecord(token_id, name, role, hash_secret(secret), now, expires)
    return IssuedToken(record, secret)


_DURATION_RE = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``2w`` or ``45s`` as seconds; ``ValueError`` otherwise."""
    match = _DURATION_RE.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"{text!r} is not a duration; write a positive number and a unit: 90d, 12h, 30m, 2w"
        )
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
