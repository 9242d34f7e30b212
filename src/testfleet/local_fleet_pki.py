"""The certificates of a :class:`~testfleet.local_fleet.LocalFleet` run over TLS.

Callers: ``LocalFleet`` only (``tls=True``: the demo and the integration
fleets). A fleet on loopback makes its own small CA in ``<root>/pki`` (kept if
already there, so restarts and re-runs reuse it), a server certificate for
127.0.0.1 and localhost, and one certificate per worker id the first time that
worker starts; these functions turn them into the command-line flags of the
coordinator and of each worker. A lab with its own PKI starts its processes
itself with its own files.
"""

from __future__ import annotations

from pathlib import Path

from testfleet.security.pki import (
    ca_files,
    init_ca,
    issue_server,
    issue_worker,
    server_files,
    worker_files,
)

LOOPBACK = "127.0.0.1"


def fleet_pki(root: Path) -> Path:
    """``root/pki`` with a CA and a loopback server certificate in it (made if missing)."""
    pki = root / "pki"
    if not ca_files(pki).cert.exists():
        init_ca(pki)
    if not server_files(pki).cert.exists():
        issue_server(pki, ["localhost"], [LOOPBACK])
    return pki


def coordinator_tls_args(pki: Path) -> list[str]:
    """The coordinator's flags: its server certificate, and the fleet's CA as the
    ``--client-ca`` that worker certificates must come from."""
    server = server_files(pki)
    ca = str(ca_files(pki).cert)
    return ["--tls-cert", str(server.cert), "--tls-key", str(server.key), "--client-ca", ca]


def worker_tls_args(pki: Path, worker_id: str) -> list[str]:
    """A worker's flags: the CA that verifies the coordinator, and the worker's own
    certificate, issued on first use."""
    files = worker_files(pki, worker_id)
    if not files.cert.exists():
        issue_worker(pki, worker_id)
    return ["--ca", str(ca_files(pki).cert), "--cert", str(files.cert), "--key", str(files.key)]
