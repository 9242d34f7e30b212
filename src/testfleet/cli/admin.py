"""``testfleet tokens create|list|revoke`` and ``testfleet audit``: who may use the
coordinator, and what was done.

Callers: people administering a coordinator. ``tokens create --db FILE``
writes the first admin token straight into the (stopped) coordinator's
database file; every other command goes through the API with an admin token
(``--token``, ``$TESTFLEET_TOKEN`` or ``--token-file``). A secret is printed
once, when it is made, and never again; an enrolment token's comes with the
``testfleet worker`` command that uses it.
"""

from __future__ import annotations

from pathlib import Path
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
from testfleet.cli.help_format import FleetCommand, FleetGroup
from testfleet.cli.results import parse_since
from testfleet.security.credentials import TOKEN_ENV
from testfleet.security.enrolment import ENROL_TOKEN_ENV, token_lifetime
from testfleet.security.tokens import Role, parse_duration

tokens_app = typer.Typer(
    help="API tokens: create (the secret is shown once), list, revoke.",
    no_args_is_help=True,
    cls=FleetGroup,
)


@tokens_app.command("create", cls=FleetCommand)
@takes_credentials
def create(
    role: Annotated[
        Role,
        typer.Option(
            help=(
                "viewer, submitter or admin; worker (a worker's channel credential, "
                "--name is its id) or enrol (a one-time enrolment token for the worker --name)."
            )
        ),
    ],
    name: Annotated[str, typer.Option(help="Who or what holds it (shown in the audit log).")],
    expires: Annotated[
        str | None,
        typer.Option(
            help="Lifetime, e.g. 90d, 12h, 2w (default: until revoked; an enrol token: "
            "1h, at most 7d).",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option(
            help="Write it straight into this database file (the first admin token; "
            "the coordinator must be stopped).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="TESTFLEET_STORE",
            help="Write it straight into this PostgreSQL database "
            "(postgresql://USER@HOST/DB; the first admin token of a PostgreSQL coordinator; "
            "also from $TESTFLEET_STORE, which keeps the password off the command line).",
            show_default=False,
        ),
    ] = None,
    db_key_file: Annotated[
        Path | None,
        typer.Option(
            envvar="TESTFLEET_DB_KEY_FILE",
            help="With --db: the file is encrypted with the key in this file (as the "
            "coordinator's --db-key-file); or put the key itself in TESTFLEET_DB_KEY.",
            show_default=False,
        ),
    ] = None,
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a token and print its secret, once."""
    try:
        lifetime = None if expires is None else parse_duration(expires)
        # Checked here too, so that --db applies the enrol rules and the API's
        # refusal is not the first a person sees.
        lifetime = token_lifetime(role, lifetime)
    except ValueError as exc:
        fail(f"--expires: {exc}")
    if db is not None and store is not None:
        fail("give --db FILE (DuckDB) or --store postgresql://... (PostgreSQL), not both")
    if store is not None:
        from testfleet.security.bootstrap import create_token_in_file
        from testfleet.store import StoreError  # here: it imports DuckDB (slow)

        try:
            issued = create_token_in_file(store, name, role, expires_in_seconds=lifetime)
        except ValueError as exc:
            fail(f"--name: {exc}")
        except StoreError as exc:
            fail(f"--store: {exc}")
        token: dict[str, Any] = {"token_id": issued.record.token_id, "name": name, "role": role}
        secret = issued.secret
    elif db is not None:
        from testfleet.security.bootstrap import create_token_in_file
        from testfleet.store import StoreError  # here: it imports DuckDB (slow)
        from testfleet.store.encryption import key_from_env, read_key_file

        if not db.parent.is_dir():
            fail(f"--db {db}: the directory {db.parent} does not exist")
        try:
            key = read_key_file(db_key_file) if db_key_file is not None else key_from_env()
            issued = create_token_in_file(
                db, name, role, expires_in_seconds=lifetime, encryption_key=key
            )
        except ValueError as exc:
            fail(f"--name: {exc}")
        except StoreError as exc:
            fail(f"{exc}")
        token = {"token_id": issued.record.token_id, "name": name, "role": role}
        secret = issued.secret
    else:
        with fleet_client(coordinator) as client:
            answer = client.create_token(name, role.value, lifetime)
        token, secret = answer["token"], answer["secret"]
    if as_json:
        print_json({"token": token, "secret": secret})
        return
    console.print(
        f"created token {token['token_id']} ({name}, {role.value}). Its secret, shown this once:",
        highlight=False,
    )
    print(secret)
    if role is Role.ENROL:
        console.print(
            f"use it once, before it expires, on the new worker: testfleet worker "
            f"--coordinator https://... --ca CA.pem --enrol-token <secret> --cert-dir DIR "
            f"(or set {ENROL_TOKEN_ENV}); it joins as {name}",
            highlight=False,
        )
        return
    console.print(f"use it with: export {TOKEN_ENV}=<secret>  (or --token, --token-file)")


@tokens_app.command("list", cls=FleetCommand)
@takes_credentials
def list_tokens(coordinator: CoordinatorOption = None, as_json: JsonOption = False) -> None:
    """Every token (never a secret), revoked and expired ones included."""
    with fleet_client(coordinator) as client:
        tokens = client.list_tokens()
    if as_json:
        print_json(tokens)
        return
    table = Table("id", "name", "role", "created", "expires", "revoked")
    for t in tokens:
        table.add_row(
            t["token_id"],
            t["name"],
            t["role"],
            t["created"],
            t["expires"] or "-",
            t["revoked"] or "-",
        )
    console.print(table)


@tokens_app.command("revoke", cls=FleetCommand)
@takes_credentials
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok-...), from tokens list.")],
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a token: the coordinator refuses it from the next request on."""
    with fleet_client(coordinator) as client:
        token = client.revoke_token(token_id)
    if as_json:
        print_json(token)
        return
    console.print(f"revoked {token['token_id']} ({token['name']}) at {token['revoked']}")


@app.command(cls=FleetCommand)
@takes_credentials
def audit(
    since: Annotated[
        str | None,
        typer.Option(help="Only events since: 2h, 3d or an ISO 8601 time.", show_default=False),
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="Only events of this token name.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="The newest N events.")] = 200,
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
) -> None:
    """The audit log: sign-in failures, refusals, tokens, submits, cancels, drains."""
    moment = None if since is None else parse_since(since)  # says what is wrong, and exits
    with fleet_client(coordinator) as client:
        events = client.audit(since=moment, actor=actor, limit=limit)
    if as_json:
        print_json(events)
        return
    table = Table("time", "kind", "outcome", "actor", "credential", "remote", "detail")
    for e in events:
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items())
        table.add_row(
            e["time"],
            e["kind"],
            e["outcome"],
            e["actor"] or "-",
            e["credential_id"] or "-",
            e["remote"] or "-",
            detail,
        )
    console.print(table)


app.add_typer(tokens_app, name="tokens")
