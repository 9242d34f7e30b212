"""Worker tokens for the workers a :class:`~testfleet.local_fleet.LocalFleet` starts.

Callers: ``LocalFleet.worker_argv`` when the fleet runs without TLS (under
TLS each worker's certificate is its credential). Every worker needs a
credential (``coordinator/worker_identity.py``); a plain-HTTP fleet gives each
worker id a worker token, created through the API with the fleet's admin token
the first time that id starts, and kept in ``<root>/worker-tokens/<id>.token``
(mode 0600) for every later start, coordinator restarts included: the worker
reads it with ``--token-file``. Never through the environment, so a task (which
inherits the worker's environment, minus credentials) cannot find it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from testfleet.client import FleetClient
from testfleet.security.credentials import write_token_file
from testfleet.security.tokens import Role


class WorkerTokenFiles:
    """One token file per worker id under ``folder``, made on first use."""

    def __init__(self, folder: Path, client: Callable[[], FleetClient]) -> None:
        """``client``: the fleet's admin client, asked for only when a token must
        be made (the coordinator must then be answering)."""
        self.folder = folder
        self._client = client

    def path(self, worker_id: str) -> Path:
        return self.folder / f"{worker_id}.token"

    def for_worker(self, worker_id: str) -> Path:
        """The token file of ``worker_id``, creating the token if it has none yet."""
        path = self.path(worker_id)
        if not path.exists():
            made = self._client().create_token(worker_id, Role.WORKER.value)
            self.folder.mkdir(parents=True, exist_ok=True)
            self.folder.chmod(0o700)
            write_token_file(path, made["secret"])
        return path
