"""API tokens for tests that run a coordinator app in-process.

Callers: the API and CLI unit tests (``TestClient(create_app(path),
headers=bearer(path))``). Every route but ``/health`` needs a token, so a test
writes one into the database file before the app opens it, as
``testfleet tokens create --db`` does.
"""

from __future__ import annotations

from pathlib import Path

from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.tokens import Role


def bearer(db_path: str | Path, role: Role = Role.ADMIN, name: str | None = None) -> dict[str, str]:
    """Create a ``role`` token in the database at ``db_path`` (the app must not
    have it open yet); the ``Authorization`` header that sends it."""
    issued = create_token_in_file(db_path, name or f"test-{role.value}", role)
    return {"Authorization": f"Bearer {issued.secret}"}
