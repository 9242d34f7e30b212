"""``testfleet``: run a coordinator or a worker, submit and inspect tasks, run the demo.

Every client command finds the coordinator through ``--coordinator URL`` or
``$TESTFLEET_COORDINATOR`` (default http://127.0.0.1:8700), prints tables for
people and ``--json`` for programs, and exits non-zero with the coordinator's
own explanation when a request is refused.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from testfleet.cli.client_options import given_ca, given_credentials, takes_credentials
from testfleet.cli.help_format import FleetCommand, FleetGroup
from testfleet.cli.process_exit import as_process, exit_now
from testfleet.cli.tables import (
    print_task_detail,
    shown_status,
    stats_table,
    tasks_table,
)
from testfleet.cli.task_files import TaskFileError, load_task_documents
from testfleet.cli.terminal_text import SafeConsole, json_text
from testfleet.cli.waiting import DEFAULT_UNSCHEDULABLE_TIMEOUT, TaskWaiter, WaitEnd
from testfleet.client import (
    CA_ENV,
    COORDINATOR_ENV,
    CoordinatorUrlError,
    FleetClient,
    FleetError,
    coordinator_url,
)
from testfleet.clock import MonotonicClock
from testfleet.domain.enums import ShownStatus, TaskStatus
from testfleet.domain.task_ids import TASK_ID_RULE, is_task_id
from testfleet.security.credentials import TOKEN_ENV, TOKEN_FILE_ENV

app = typer.Typer(
    name="testfleet",
    help="Run tests and model benchmarks across a fleet of machines; every result in DuckDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=FleetGroup,
)
#: Piped output is not a terminal; Rich would fold tables to 80 columns there.
_PIPE_WIDTH = None if sys.stdout.isatty() else 160
# Safe consoles: control characters in what tasks and workers sent are shown as
# escapes, never written raw to the terminal (see cli/terminal_text.py).
console = SafeConsole(width=_PIPE_WIDTH)
errors = SafeConsole(stderr=True, width=None if sys.stderr.isatty() else 160)

CoordinatorOption = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        "-c",
        envvar=COORDINATOR_ENV,
        help="Coordinator URL, or several comma-separated (failover: the leader is "
        "followed); default http://127.0.0.1:8700.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

#: The warning `testfleet run` silences (see there).
REWRITE_WARNING = "Module already imported so cannot be rewritten; testfleet"

#: Exit codes of ``testfleet wait`` (EXIT_ERROR: of every command; see the README).
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_WAIT_TIMEOUT = 3
EXIT_UNSCHEDULABLE = 4
#: 128 + SIGINT, as shells report a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


def say_error(message: str) -> None:
    """Print ``error: MESSAGE`` on stderr. The message is plain text, never markup:
    reasons like ``needs one of [cuda]`` would otherwise lose their brackets."""
    errors.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """:func:`say_error`, then exit with ``code``."""
    say_error(message)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    """``--json`` output: JSON with no control character raw (see ``json_text``)."""
    sys.stdout.write(json_text(data) + "\n")


def client_for(coordinator: str | None) -> FleetClient:
    """The client every command uses, with the command's ``--token`` or
    ``--token-file`` (else ``$TESTFLEET_TOKEN``...) and ``--ca`` (else
    ``$TESTFLEET_CA``); the CLI's tests replace this one function to point the
    commands at an app in the same process."""
    token, token_file = given_credentials()
    return FleetClient(coordinator, token=token, token_file=token_file, ca=given_ca())


@contextmanager
def fleet_client(coordinator: str | None) -> Iterator[FleetClient]:
    """A client for the coordinator, for one client command's requests.

    Called by every command that talks to the coordinator. A refused request,
    an unreachable or wrong coordinator, or a URL that cannot work
    (:class:`FleetError`) raised inside the block ends the command with one
    line and exit 2 (:func:`report_fleet_error`); the client is closed either way.
    """
    with client_for(coordinator) as client:
        try:
            yield client
        except FleetError as exc:
            report_fleet_error(exc)


def resolve_coordinator(coordinator: str | None) -> str:
    """The coordinator's address for commands that hand it on (``worker``, ``run``),
    checked here so a URL that cannot work stops the command in one line."""
    try:
        return coordinator_url(coordinator)
    except CoordinatorUrlError as exc:
        fail(f"{exc.message}. Set --coordinator or ${COORDINATOR_ENV}.")


def report_fleet_error(exc: FleetError) -> NoReturn:
    details = ""
    for item in exc.details[:10] if isinstance(exc.details, list) else []:
        if isinstance(item, dict) and "field" in item:
            details += f"\n  {item['field']}: {item['problem']}"
    fail(f"{exc.message}{details}")


def parse_tags(values: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values:
        key, sep, tag_value = value.partition("=")
        if not sep or not key:
            fail(f"--tag {value!r}: expected KEY=VALUE, e.g. --tag rack=a")
        tags[key] = tag_value
    return tags


# ---------------------------------------------------------------- processes

# The commands that start processes live in cli/processes.py. Imported here,
# not at the top: that module uses the options and helpers above, which exist
# by now; and here, so that `testfleet --help` lists them first.
from testfleet.cli.processes import coordinator, demo, worker  # noqa: E402

app.command(cls=FleetCommand)(coordinator)
app.command(cls=FleetCommand)(worker)

# ---------------------------------------------------------------- client commands


@app.command(cls=FleetCommand)
@takes_credentials
def submit(
    files: Annotated[list[str], typer.Argument(help="JSON or YAML task files ('-' = stdin).")],
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Submit task documents (docs/formats.md in the repository): one per file or a list."""
    documents: list[dict[str, Any]] = []
    try:
        for path in files:
            documents += load_task_documents(path)
    except TaskFileError as exc:
        fail(str(exc))
    with fleet_client(coordinator) as client:
        ids = client.submit(documents)
    if as_json:
        print_json({"accepted": len(ids), "task_ids": ids})
    else:
        console.print(
            f"accepted {len(ids)} task(s): "
            + ", ".join(ids[:20])
            + (" ..." if len(ids) > 20 else "")
        )


@app.command(
    cls=FleetCommand,
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
)
@takes_credentials
def run(
    ctx: typer.Context,
    path: Annotated[
        str,
        typer.Argument(
            help="Test file or directory, as you would give pytest; everything after it "
            "goes to pytest (e.g. -k EXPR, -rA, --junitxml=FILE, --rerun-failures N).",
            show_default=False,
        ),
    ],
    coordinator: CoordinatorOption = None,
    rerun_failures: Annotated[
        int,
        typer.Option(
            min=0, help="Rerun a failed test up to N times on another worker (flaky tests)."
        ),
    ] = 0,
    run_id: Annotated[
        str | None, typer.Option(help="The run's id (default: generated).", show_default=False)
    ] = None,
    repo: Annotated[
        str | None,
        typer.Option(
            help="Git repository the workers (and this machine, to collect) clone; "
            "needs --commit. PATH is then inside the repository.",
            show_default=False,
        ),
    ] = None,
    commit: Annotated[
        str | None, typer.Option(help="Commit hash to test, with --repo.", show_default=False)
    ] = None,
    python: Annotated[
        str | None,
        typer.Option(help="Interpreter workers run pytest with.", show_default=False),
    ] = None,
    chunk_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds one chunk of tests may take on a worker.")
    ] = 3600.0,
    wait_for_workers: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds to wait for a worker that takes test tasks when none is connected "
            "yet (a coordinator that just restarted, workers still starting).",
        ),
    ] = 60.0,
    memory: Annotated[
        str | None,
        typer.Option(
            help='Memory each chunk\'s tests may use together on its worker, e.g. "512MiB": '
            "its pytest process is held to it, and a test past it fails as out_of_memory.",
            show_default=False,
        ),
    ] = None,
    cpu_cores: Annotated[
        int | None,
        typer.Option(
            min=1, help="Whole cores each chunk's tests are pinned to.", show_default=False
        ),
    ] = None,
    disk: Annotated[
        str | None,
        typer.Option(
            help='The largest file each chunk\'s tests may write, e.g. "1GiB".',
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a pytest suite across the fleet and exit with pytest's exit code.

    Collects here (this directory is the project: workers use the same path,
    or --repo/--commit), splits by past durations (by count the first time),
    shows progress, prints pytest's own summary with the same counts as a
    serial run, and writes --junitxml if asked.
    """
    url = resolve_coordinator(coordinator)
    args = [path, *ctx.args, "--fleet", url, "--fleet-chunk-timeout", str(chunk_timeout)]
    if rerun_failures:
        args += ["--rerun-failures", str(rerun_failures)]
    if run_id:
        args += ["--fleet-run-id", run_id]
    if python:
        args += ["--fleet-python", python]
    args += ["--fleet-wait-for-workers", str(wait_for_workers)]
    for option, value in (("--fleet-memory", memory), ("--fleet-cpu-cores", cpu_cores)):
        if value is not None:
            args += [option, str(value)]
    if disk is not None:
        args += ["--fleet-disk", disk]
    if (repo is None) != (commit is None):
        fail("--repo and --commit go together: give both (a commit hash, not a branch)")
    if repo is not None and commit is not None:
        from testfleet.repo_cache import CheckoutError, ensure_checkout

        cache = Path.home() / ".cache" / "testfleet" / "client-repos"
        errors.print(f"checking out {repo} at {commit} ...")
        try:
            checkout = ensure_checkout(repo, commit, cache)
        except CheckoutError as exc:
            fail(str(exc), code=4)
        os.chdir(checkout)
        # Node ids are relative to the rootdir; pinning it to the checkout's
        # top makes them the same here and in every worker's own checkout
        # (pytest would otherwise look above it, where the caches differ).
        # Before the user's args, so their own --rootdir wins.
        args = ["--rootdir", ".", *args, "--fleet-repo", repo, "--fleet-commit", commit]
    # The pytest plugin's client reads the token from the environment (as
    # `pytest --fleet` does); this process ends with the run.
    token, token_file = given_credentials()
    if token:
        os.environ[TOKEN_ENV] = token
    if token_file:
        os.environ[TOKEN_FILE_ENV] = token_file
    if given_ca():
        os.environ[CA_ENV] = str(given_ca())
    import pytest

    # pytest marks every package with a pytest11 entry point for assertion
    # rewriting; testfleet is already imported here (this is its CLI), which
    # pytest would count as a warning that a serial run does not have.
    args += ["-W", f"ignore:{REWRITE_WARNING}:pytest.PytestAssertRewriteWarning"]
    # Ends without the interpreter's teardown (cli/process_exit.py): once pytest
    # has returned, its summary and reports are out.
    exit_now(int(pytest.main(args)))


@app.command(cls=FleetCommand)
@takes_credentials
def tasks(
    status: Annotated[
        list[ShownStatus] | None,
        typer.Option(
            "--status",
            "-s",
            help="Only these statuses; repeat. unschedulable: queued tasks no connected "
            "worker can run (queued includes them).",
        ),
    ] = None,
    task_type: Annotated[str | None, typer.Option("--type", help="Only this task type.")] = None,
    worker: Annotated[str | None, typer.Option(help="Only tasks on this worker.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
) -> None:
    """List tasks, oldest first."""
    with fleet_client(coordinator) as client:
        page = client.list_tasks(
            statuses=[s.value for s in status or []],
            task_type=task_type,
            worker_id=worker,
            limit=limit,
            offset=offset,
        )
    if as_json:
        print_json(page)
        return
    console.print(
        tasks_table(page["tasks"], title=f"tasks ({len(page['tasks'])} of {page['total']})")
    )


@app.command(cls=FleetCommand)
@takes_credentials
def task(
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
    logs: Annotated[
        bool, typer.Option("--logs", help="Print the outcome's captured output.")
    ] = False,
) -> None:
    """One task: its status, every attempt, and its result (the result document)."""
    with fleet_client(coordinator) as client:
        detail = client.get_task(task_id)
    if as_json:
        print_json(detail)
        return
    print_task_detail(console, detail)
    if logs and detail.get("result"):
        from testfleet.domain.result import decode_logs

        console.print(decode_logs(detail["result"].get("logs", "")), markup=False, highlight=False)


@app.command(cls=FleetCommand)
@takes_credentials
def cancel(
    task_ids: Annotated[list[str], typer.Argument(help="Tasks to cancel.")],
    coordinator: CoordinatorOption = None,
) -> None:
    """Cancel queued or running tasks, all in one step.

    A running attempt is stopped on its worker; a slot it frees never goes to
    another task named here.
    """
    # Ids no task can have are answered here: the coordinator would only say
    # it has no such task.
    impossible = [t for t in dict.fromkeys(task_ids) if not is_task_id(t)]
    possible = [t for t in task_ids if is_task_id(t)]
    outcome: dict[str, list[str]] = {"cancelled": [], "already_finished": [], "not_found": []}
    if possible:
        with fleet_client(coordinator) as client:
            outcome = client.cancel_many(possible)
    for task_id in outcome["cancelled"]:
        console.print(f"cancelled {escape(task_id)}")
    for task_id in outcome["already_finished"]:
        say_error(f"task {task_id!r} has already finished; nothing to cancel")
    for task_id in outcome["not_found"]:
        say_error(f"no task with id {task_id!r}")
    for task_id in impossible:
        say_error(f"no task can have the id {task_id!r}: {TASK_ID_RULE}")
    if outcome["already_finished"] or outcome["not_found"] or impossible:
        raise typer.Exit(EXIT_ERROR)


@app.command(cls=FleetCommand)
@takes_credentials
def drain(
    worker_id: Annotated[str, typer.Argument(help="The worker to drain.")],
    coordinator: CoordinatorOption = None,
) -> None:
    """Let a worker finish what it runs and take nothing new (undo with undrain)."""
    with fleet_client(coordinator) as client:
        client.drain(worker_id)
    console.print(f"draining {escape(worker_id)}")


@app.command(cls=FleetCommand)
@takes_credentials
def undrain(
    worker_id: Annotated[str, typer.Argument(help="The drained worker.")],
    coordinator: CoordinatorOption = None,
) -> None:
    """Let a drained worker take new work again."""
    with fleet_client(coordinator) as client:
        client.undrain(worker_id)
    console.print(f"{escape(worker_id)} takes new work again")


@app.command(cls=FleetCommand)
@takes_credentials
def stats(coordinator: CoordinatorOption = None, as_json: JsonOption = False) -> None:
    """Task counts by status, queue depth, workers and busy slots."""
    with fleet_client(coordinator) as client:
        figures = client.stats()
    if as_json:
        print_json(figures)
    else:
        console.print(stats_table(figures))


@app.command(cls=FleetCommand)
@takes_credentials
def wait(
    task_ids: Annotated[list[str], typer.Argument(help="Tasks to wait for.")],
    timeout: Annotated[
        float | None,
        typer.Option(min=0, help="Give up after this many seconds (exit 3).", show_default=False),
    ] = None,
    unschedulable_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            help="Give up (exit 4) once a task has been unschedulable (no connected worker "
            "can run it) this many seconds in a row; 'inf' waits for a worker that fits.",
        ),
    ] = DEFAULT_UNSCHEDULABLE_TIMEOUT,
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between checks.")] = 0.5,
    coordinator: CoordinatorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Wait until tasks finish, saying why any cannot run.

    Exit 0 if all completed, 1 if any did not, 3 on --timeout, 4 when a task stayed
    unschedulable for --unschedulable-timeout, 130 on Ctrl-C (the tasks keep running).
    """
    with fleet_client(coordinator) as client:
        waiter = TaskWaiter(
            client,
            task_ids,
            clock=MonotonicClock(),
            sleep=time.sleep,
            say=lambda line: errors.print(escape(line)),
            poll=poll,
            timeout=timeout,
            unschedulable_timeout=unschedulable_timeout,
        )
        try:
            outcome = waiter.run()
        except KeyboardInterrupt:
            errors.print(
                "stopped waiting; the tasks keep running on the fleet "
                "(`testfleet tasks` follows them, `testfleet cancel ID` stops one)"
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if outcome.end is WaitEnd.TIMED_OUT:
        fail(f"timed out waiting for {', '.join(outcome.waiting)}", EXIT_WAIT_TIMEOUT)
    if outcome.end is WaitEnd.UNSCHEDULABLE:
        lines = [
            f"{task_id} has been unschedulable for {waiter.unschedulable_for(task_id):.0f}s: "
            f"{reason}"
            for task_id, reason in outcome.stuck.items()
        ]
        fail(
            "; ".join(lines) + ". It stays queued and runs if a worker that fits connects; "
            "`testfleet cancel ID` drops it, --unschedulable-timeout waits longer.",
            EXIT_UNSCHEDULABLE,
        )
    ordered = [outcome.tasks[t] for t in dict.fromkeys(task_ids)]
    if as_json:
        print_json({"tasks": ordered})
    else:
        console.print(tasks_table(ordered))
    if any(t["status"] != TaskStatus.COMPLETED.value for t in ordered):
        raise typer.Exit(EXIT_FAILED)


# Imported here, not at the top: these modules use this module's options and
# helpers, which exist by now (the package imports this module first).
from testfleet.cli.certs import certs_app  # noqa: E402
from testfleet.cli.data import export, sql  # noqa: E402
from testfleet.cli.results import results_app  # noqa: E402

app.command(cls=FleetCommand)(demo)
app.command(cls=FleetCommand)(takes_credentials(sql))
app.command(cls=FleetCommand)(takes_credentials(export))
app.add_typer(results_app, name="results")
app.add_typer(certs_app, name="certs")
import testfleet.cli.admin  # noqa: E402  (registers `tokens` and `audit`)
import testfleet.cli.alerts  # noqa: E402  (registers `alerts`)
import testfleet.cli.backup  # noqa: E402  (registers `backup` and `restore`)
import testfleet.cli.logs  # noqa: E402  (registers `logs`)
import testfleet.cli.workers  # noqa: E402, F401  (registers `workers` and `workers revoke`)


def main() -> None:
    as_process()
    app()


__all__ = ["app", "main", "shown_status"]
