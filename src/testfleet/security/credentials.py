"""Where a client finds its API token: ``--token``, ``$TESTFLEET_TOKEN``, or a token file.

Callers: :class:`~testfleet.client.FleetClient` (so the CLI, ``testfleet run``,
the pytest plugin and the benchmarks), and ``LocalFleet``, which writes the
file. A token file holds the secret on its first line and must not be
readable by the group or others (as ssh insists for private keys): a readable
one is refused, naming the file and ``chmod 600``, rather than used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

TOKEN_ENV = "TESTFLEET_TOKEN"
TOKEN_FILE_ENV = "TESTFLEET_TOKEN_FILE"


class CredentialError(Exception):
    """A token that cannot be used; the message names the file or variable and the fix."""


def read_token_file(path: str | Path) -> str:
    """The secret in the token file at ``path`` (its first line), or :class:`CredentialError`."""
    shown = str(path)
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialError(
                f"token file {shown} can be read by others (mode {stat.S_IMODE(mode):o}); "
                f"run: chmod 600 {shown}"
            )
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialError(f"token file {shown} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CredentialError(f"token file {shown} cannot be read: {error}") from None
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise CredentialError(f"token file {shown} is empty; put the token on its first line")
    return secret


def write_token_file(path: str | Path, secret: str) -> Path:
    """Write ``secret`` to ``path`` with mode 0600 (created that way, never readable by others)."""
    target = Path(path)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    os.chmod(target, 0o600)  # an existing file keeps its mode through O_CREAT
    return target


def resolve_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    """The token to send: ``token``, else ``$TESTFLEET_TOKEN``, else the file
    ``token_file`` or ``$TESTFLEET_TOKEN_FILE``; None when there is none."""
    if token:
        return token.strip()
    from_env = os.environ.get(TOKEN_ENV, "").strip()
    if from_env:
        return from_env
    path = token_file or os.environ.get(TOKEN_FILE_ENV) or None
    return None if path is None else read_token_file(path)
