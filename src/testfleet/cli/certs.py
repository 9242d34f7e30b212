"""``testfleet certs``: a small CA and the certificates a TLS fleet needs.

Callers: registered on the main app as the ``certs`` sub-command
(``cli/app.py``). Each command is a thin shell over
:mod:`testfleet.security.pki`: it turns a :class:`PkiError` into one line and
exit 2, and prints where the files went and how to use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from testfleet.cli.app import errors, fail
from testfleet.cli.help_format import FleetCommand, FleetGroup

certs_app = typer.Typer(
    help="Make a CA and issue the coordinator's and workers' certificates (TLS).",
    no_args_is_help=True,
    cls=FleetGroup,
)

DirOption = Annotated[Path, typer.Option("--dir", help="Folder of the CA and its certificates.")]


@certs_app.command(cls=FleetCommand)
def init(
    directory: DirOption = Path("pki"),
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing CA (old certificates stop working)."),
    ] = False,
) -> None:
    """Create a CA (EC P-256): DIR/ca.pem, and DIR/ca.key with mode 0600."""
    # Imported here: cryptography is slow to import, and every command pays
    # for what the CLI's modules import at the top.
    from testfleet.security.pki import PkiError, init_ca

    try:
        files = init_ca(directory, force=force)
    except PkiError as exc:
        fail(str(exc))
    errors.print(f"CA: {files.cert} (key {files.key}, keep it private)")


@certs_app.command(cls=FleetCommand)
def server(
    directory: DirOption = Path("pki"),
    dns: Annotated[
        list[str] | None, typer.Option("--dns", help="Host name it serves; repeat.")
    ] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="Address it serves; repeat.")] = None,
) -> None:
    """Issue the coordinator's certificate (default: localhost and 127.0.0.1)."""
    # Imported here: cryptography is slow to import, and every command pays
    # for what the CLI's modules import at the top.
    from testfleet.security.pki import PkiError, issue_server

    try:
        files = issue_server(directory, dns or [], ip or [])
    except PkiError as exc:
        fail(str(exc))
    errors.print(
        f"server certificate: {files.cert} (key {files.key}); start the coordinator with "
        f"--tls-cert {files.cert} --tls-key {files.key} --client-ca {directory / 'ca.pem'}"
    )


@certs_app.command(cls=FleetCommand)
def worker(
    worker_id: Annotated[str, typer.Argument(help="The worker's id (its certificate names it).")],
    directory: DirOption = Path("pki"),
) -> None:
    """Issue a worker's certificate: its id in the subject and as testfleet:worker:ID."""
    # Imported here: cryptography is slow to import, and every command pays
    # for what the CLI's modules import at the top.
    from testfleet.security.pki import PkiError, issue_worker

    try:
        files = issue_worker(directory, worker_id)
    except PkiError as exc:
        fail(str(exc))
    errors.print(
        f"worker certificate: {files.cert} (key {files.key}); start the worker with "
        f"--ca {directory / 'ca.pem'} --cert {files.cert} --key {files.key}"
    )
