"""PostgreSQL connection strings: recognised, checked, masked, and their errors explained.

Callers: :func:`testfleet.store.open_store` asks :func:`is_postgres_dsn` which
store a ``--store`` value means; :class:`~testfleet.store.postgres.PostgresStore`
parses it with :func:`parse_dsn` and explains a failed connection with
:func:`describe_connect_error`. A password in a DSN is never shown: every
message names the DSN through :attr:`PostgresDsn.masked`, and psycopg's own
messages (which can quote the conninfo) are scrubbed of it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from testfleet.store.errors import StoreError

SCHEMES = ("postgresql", "postgres")
#: Seconds a connection attempt may take before the store gives up (libpq's
#: connect_timeout); an unreachable host then fails in seconds, not minutes.
CONNECT_TIMEOUT_SECONDS = 10
EXAMPLE = "postgresql://USER:PASSWORD@HOST:5432/DATABASE"


def is_postgres_dsn(spec: str) -> bool:
    """Whether ``spec`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return spec.split("://", 1)[0].lower() in SCHEMES if "://" in spec else False


@dataclass(frozen=True, slots=True)
class PostgresDsn:
    """A checked DSN. ``url`` holds the password and is never shown; ``masked`` is."""

    url: str = field(repr=False)
    masked: str
    password: str = field(repr=False)

    def conninfo(self) -> str:
        """The DSN with a connect timeout added (unless it names one)."""
        if "connect_timeout=" in self.url:
            return self.url
        joiner = "&" if "?" in self.url else "?"
        return f"{self.url}{joiner}connect_timeout={CONNECT_TIMEOUT_SECONDS}"

    def scrub(self, text: str) -> str:
        """``text`` with the password (as written, and URL-decoded) replaced by ``***``."""
        for secret in {self.password, unquote(self.password)} - {""}:
            text = text.replace(secret, "***")
        return text


def parse_dsn(spec: str) -> PostgresDsn:
    """Check ``spec`` and return it with its masked form; a :class:`StoreError` naming
    the fix for anything that is not a ``postgresql://`` URL with a database."""
    if not is_postgres_dsn(spec):
        shown = spec.split("://", 1)[0] + "://..." if "://" in spec else "a plain string"
        raise StoreError(
            f"--store must be a PostgreSQL URL like {EXAMPLE} (scheme postgresql:// or "
            f"postgres://), not {shown}; for a DuckDB file use --db FILE"
        )
    try:
        parts = urlsplit(spec)
        port = parts.port
    except ValueError as error:
        raise StoreError(
            f"--store is not a valid PostgreSQL URL ({error}); write it like {EXAMPLE}"
        ) from None
    password = parts.password or ""
    netloc = parts.hostname or ""
    if port is not None:
        netloc += f":{port}"
    if parts.username:
        netloc = f"{parts.username}{':***' if password else ''}@{netloc}"
    masked = f"{parts.scheme}://{netloc}{parts.path}"
    if not parts.path.strip("/"):
        raise StoreError(f"--store {masked} names no database; add it, like {EXAMPLE}")
    return PostgresDsn(spec, masked, password)


def describe_connect_error(dsn: PostgresDsn, error: Exception) -> StoreError:
    """One line for a connection that failed: refused, timed out, wrong password,
    missing database, or other; with what to check, and no password."""
    text = dsn.scrub(str(error)).strip()
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        hint = "wrong user name or password; check the credentials in the URL"
    elif "does not exist" in lowered and "database" in lowered:
        hint = "the database does not exist; create it (createdb) or fix the URL's database name"
    elif "connection refused" in lowered:
        hint = "nothing listens there; check the host and port, and that PostgreSQL runs"
    elif "timeout" in lowered or "timed out" in lowered:
        hint = (
            f"no answer within {CONNECT_TIMEOUT_SECONDS} s; check the host, the port "
            "and the network path (a firewall?)"
        )
    else:
        hint = "check the URL and the server"
    last_line = text.splitlines()[-1] if text else type(error).__name__
    return StoreError(f"cannot connect to PostgreSQL at {dsn.masked}: {hint} ({last_line})")
