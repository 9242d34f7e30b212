"""``testfleet backup`` and ``testfleet restore``: a coordinator's database, copied and put back.

Callers: registered on the main app (``cli/app.py``). ``backup --to FILE``
asks the running coordinator for a snapshot (``POST /api/v1/admin/backup``,
admin token): it alone holds the file, and a copy made from outside would
miss what is still in DuckDB's WAL. ``restore FILE --db NEW`` runs on the
machine, with no coordinator: it checks the snapshot (it opens, its schema is
one this testfleet knows, row counts, consistency queries) and writes it to
``NEW`` for ``testfleet coordinator --db NEW`` (``store/restore.py``).
Scheduled backups are the coordinator's ``--backup-every`` (``cli/processes.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
from testfleet.security.tokens import parse_duration


@app.command("backup", cls=FleetCommand)
@takes_credentials
def backup(
    to: Annotated[
        Path,
        typer.Option(
            "--to",
            help="Write the snapshot to this new file (a DuckDB database).",
            show_default=False,
        ),
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace --to if it exists.")] = False,
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Download a consistent snapshot of the running coordinator's database (admin token).

    It holds every task the coordinator acknowledged before the command started;
    the coordinator keeps working meanwhile. A backup of an encrypted database
    is encrypted under the same key. Put it back with `testfleet restore`.
    """
    if to.exists() and not force:
        fail(f"--to {to}: the file exists; give a new file, or add --force to replace it")
    if not to.parent.is_dir():
        fail(f"--to {to}: the directory {to.parent} does not exist; create it first")
    with fleet_client(coordinator) as client:
        about = client.backup(to)
    if as_json:
        print_json({"file": str(to), "bytes": to.stat().st_size, **about})
        return
    encrypted = " (encrypted: restore it with its key)" if about["encrypted"] == "true" else ""
    console.print(
        f"{to}: {about['tasks']} tasks, schema version {about['schema_version']}, "
        f"{to.stat().st_size:,} bytes{encrypted}"
    )


@app.command("restore", cls=FleetCommand)
def restore(
    snapshot: Annotated[
        Path, typer.Argument(help="A file `testfleet backup` wrote.", show_default=False)
    ],
    db: Annotated[
        Path,
        typer.Option(
            help="The database file to create (then `testfleet coordinator --db` it).",
            show_default=False,
        ),
    ],
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace --db if it exists (stop its coordinator first)."),
    ] = False,
    db_key_file: Annotated[
        Path | None,
        typer.Option(
            envvar="TESTFLEET_DB_KEY_FILE",
            help="The key of an encrypted snapshot (the database's own key); or put the "
            "key itself in TESTFLEET_DB_KEY.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a backup and restore it to a new database file.

    The snapshot must open (with its key if it is encrypted), have a schema this
    testfleet knows, and pass the consistency checks; --db is written only then,
    and an existing one only with --force.
    """
    from testfleet.store import StoreError  # here: it imports DuckDB (slow)
    from testfleet.store.encryption import KEY_ENV, key_from_env, read_key_file
    from testfleet.store.restore import restore_snapshot

    try:
        env_key = key_from_env()
        if env_key is not None and db_key_file is not None:
            fail(f"give the database key once: --db-key-file or {KEY_ENV}, not both")
        key = read_key_file(db_key_file) if db_key_file is not None else env_key
        report = restore_snapshot(snapshot, db, key=key, force=force)
    except StoreError as exc:
        fail(str(exc))
    if as_json:
        print_json({"db": str(db), "schema_version": report.schema_version, "rows": report.rows})
        return
    console.print(
        f"{db}: restored from {snapshot}, schema version {report.schema_version}, "
        f"{report.rows.get('distributed_tasks', 0)} tasks, "
        f"{report.rows.get('task_results', 0)} results; checks passed"
    )


def backup_interval(text: str | None) -> float:
    """``--backup-every`` as seconds (0: none); ends the command on a bad value."""
    if text is None:
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as exc:
        fail(f"--backup-every: {exc}")
