"""``testfleet alerts``: alerts firing, pending and resolved, and notification results.

Callers: people watching a fleet, with a viewer token (``--token``,
``$TESTFLEET_TOKEN`` or ``--token-file``). The coordinator evaluates the rules
(``coordinator/alerts/``); this only shows ``GET /api/v1/alerts``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from testfleet.cli.app import (
    CoordinatorOption,
    JsonOption,
    app,
    console,
    fail,
    fleet_client,
    print_json,
)
from testfleet.cli.client_options import takes_credentials
from testfleet.cli.help_format import FleetCommand
from testfleet.cli.terminal_text import shown
from testfleet.domain.alerts import AlertState

_STATE_STYLE = {"firing": "[red]firing[/red]", "pending": "[yellow]pending[/yellow]"}


def alerts_table(alerts: list[dict[str, Any]]) -> Table:
    """One row per alert: state, rule, labels, since when, and its summary."""
    table = Table(title="alerts", header_style="bold")
    for column in ("state", "rule", "severity", "labels", "since", "resolved", "summary"):
        table.add_column(column)
    for alert in alerts:
        labels = " ".join(f"{key}={value}" for key, value in sorted(alert["labels"].items()))
        table.add_row(
            _STATE_STYLE.get(alert["state"], shown(alert["state"])),
            shown(alert["rule"]),
            shown(alert["severity"]),
            shown(labels) or "-",
            shown(alert["fired_at"] or alert["pending_since"]),
            shown(alert["resolved_at"] or "-"),
            shown(alert["summary"]),
        )
    return table


def notifications_table(notifications: list[dict[str, Any]]) -> Table:
    table = Table(title="notifications", header_style="bold")
    for column in ("time", "receiver", "alert", "state", "status", "tries", "error"):
        table.add_column(column)
    for record in notifications:
        table.add_row(
            shown(record["time"]),
            shown(record["receiver"]),
            shown(record["alert_id"]),
            shown(record["alert_state"]) + (" (repeat)" if record["repeat"] else ""),
            shown(record["status"]),
            str(record["attempts"]),
            shown(record["error"] or "-"),
        )
    return table


@app.command("alerts", cls=FleetCommand)
@takes_credentials
def alerts(
    state: Annotated[
        str | None,
        typer.Option(
            help="Only alerts in this state: firing, pending or resolved.", show_default=False
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many alerts.")] = 100,
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Alerts the coordinator raised (firing, pending, resolved) and their webhook notifications."""
    if state is not None and state not in {s.value for s in AlertState}:
        fail(f"--state must be one of {', '.join(s.value for s in AlertState)}, not {state!r}")
    with fleet_client(coordinator) as client:
        answer = client.alerts(state=state, limit=limit)
    if as_json:
        print_json(answer)
        return
    console.print(f"{answer['firing']} firing, {answer['pending']} pending")
    if answer["alerts"]:
        console.print(alerts_table(answer["alerts"]))
    if answer["notifications"]:
        console.print(notifications_table(answer["notifications"]))
