"""``testfleet workers`` (list) and ``testfleet workers revoke ID``.

Callers: people watching or administering a fleet. Listing needs a viewer
token; revoking an admin one (``--token``, ``$TESTFLEET_TOKEN`` or
``--token-file``). A revoke closes the worker's socket at once, requeues what
it ran, revokes its worker and enrol tokens and refuses credentials issued
before it (``coordinator/revocation_api.py``).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from testfleet.cli.app import (
    CoordinatorOption,
    JsonOption,
    app,
    console,
    fleet_client,
    print_json,
)
from testfleet.cli.client_options import takes_credentials
from testfleet.cli.help_format import FleetCommand, FleetGroup
from testfleet.cli.tables import workers_table

workers_app = typer.Typer(cls=FleetGroup, invoke_without_command=True)


@workers_app.callback()
@takes_credentials
def workers(
    context: typer.Context, coordinator: CoordinatorOption = None, as_json: JsonOption = False
) -> None:
    """Workers the coordinator knows, with their hardware and load (`revoke` to cut one off)."""
    if context.invoked_subcommand is not None:
        return
    with fleet_client(coordinator) as client:
        listed = client.workers()
    if as_json:
        print_json({"workers": listed})
    else:
        console.print(workers_table(listed))


@workers_app.command("revoke", cls=FleetCommand)
@takes_credentials
def revoke(
    worker_id: Annotated[str, typer.Argument(help="The worker to revoke.")],
    reason: Annotated[
        str | None, typer.Option(help="Why (kept in the audit log).", show_default=False)
    ] = None,
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a worker: close its connection now (its tasks are requeued) and refuse
    its token and any certificate issued before now. A certificate issued 5 minutes
    or more later (`testfleet certs worker` backdates by 5), a certificate from
    enrolment with a new enrol token, or a new worker token lets it back."""
    with fleet_client(coordinator) as client:
        answer = client.revoke_worker(worker_id, reason)
    if as_json:
        print_json(answer)
        return
    tokens = answer["tokens_revoked"]
    status = answer.get("status") or "never connected"
    console.print(
        f"revoked {escape(worker_id)} ({escape(str(status))}); "
        f"{len(tokens)} token(s) revoked{': ' + ', '.join(tokens) if tokens else ''}"
    )


app.add_typer(workers_app, name="workers")
