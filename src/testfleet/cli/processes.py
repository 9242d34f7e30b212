"""The commands that start processes: ``coordinator``, ``worker`` and ``demo``.

Callers: registered on the main app (``cli/app.py``). Each imports what it
runs inside the function, so ``testfleet --help`` and the client commands
never pay for importing the coordinator, the worker or their dependencies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from testfleet.cli.app import (
    CoordinatorOption,
    console,
    errors,
    fail,
    parse_tags,
    resolve_coordinator,
)
from testfleet.domain.enums import Codec


def coordinator(
    db: Annotated[Path, typer.Option(help="DuckDB file (created if missing).")] = Path(
        "testfleet.duckdb"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8700,
    heartbeat_interval: Annotated[
        float, typer.Option(help="Seconds between worker heartbeats.")
    ] = 2.0,
    heartbeat_timeout: Annotated[
        float, typer.Option(help="A worker silent this long is declared lost.")
    ] = 15.0,
    db_threads: Annotated[
        int,
        typer.Option(min=0, help="DuckDB threads; 0 = one per core (small batches run best on 1)."),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
) -> None:
    """Run a coordinator: REST API, worker channel and the DuckDB file it alone owns."""
    from testfleet.coordinator.app import run_coordinator
    from testfleet.coordinator.settings import CoordinatorSettings
    from testfleet.coordinator.startup import StartupError
    from testfleet.store import StoreError

    if heartbeat_timeout <= heartbeat_interval:
        fail("--heartbeat-timeout must be longer than --heartbeat-interval")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    settings = CoordinatorSettings(
        heartbeat_interval_seconds=heartbeat_interval,
        heartbeat_timeout_seconds=heartbeat_timeout,
        db_threads=db_threads or None,
    )
    try:
        run_coordinator(
            db,
            host=host,
            port=port,
            settings=settings,
            log_level=log_level,
            announce=lambda url: errors.print(f"testfleet coordinator on {url} with {db}"),
        )
    except (StartupError, StoreError) as exc:
        fail(str(exc))


def worker(
    coordinator: CoordinatorOption = None,
    slots: Annotated[int, typer.Option(min=1, max=4096, help="Attempts run at once.")] = 1,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="KEY=VALUE label tasks can require; repeat.")
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option(help="Stable id (default: HOSTNAME-PID).", show_default=False)
    ] = None,
    codec: Annotated[Codec, typer.Option(help="Frame encoding to ask for.")] = Codec.JSON,
    probe_torch: Annotated[
        bool, typer.Option("--probe-torch/--no-probe-torch", help="Ask torch what it sees.")
    ] = True,
    work_dir: Annotated[
        Path | None, typer.Option(help="Cache and scratch directory.", show_default=False)
    ] = None,
    allow_types: Annotated[
        str | None,
        typer.Option(
            help="Task types this worker takes, e.g. test,benchmark (default: all it can run; "
            "leave out command to refuse arbitrary programs).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
) -> None:
    """Join a coordinator as a worker (connects out; no inbound port needed)."""
    from testfleet.worker.agent import AgentSettings, WorkerAgent, WorkerRefusedError
    from testfleet.worker.executors.leftovers import reap_leftovers
    from testfleet.worker.executors.registry import (
        MISSING_FOR,
        AllowTypesError,
        choose_executors,
        close_executors,
        parse_allowed_types,
        prepare_executors,
    )
    from testfleet.worker.hardware import detect_capabilities

    url = resolve_coordinator(coordinator)
    try:
        allowed = None if allow_types is None else parse_allowed_types(allow_types)
    except AllowTypesError as exc:
        fail(str(exc))
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    chosen = choose_executors(allowed)
    executors = chosen.executors
    for missing in chosen.unavailable:
        errors.print(
            f"[yellow]--allow-types:[/yellow] this worker cannot run {missing.value} tasks "
            f"({MISSING_FOR.get(missing, 'no executor')}); it will not take them"
        )
    if not executors:
        fail(f"--allow-types {allow_types}: this worker can run none of these task types")
    capabilities = detect_capabilities(
        tags=parse_tags(tag or []), task_types=list(executors), probe_torch=probe_torch
    ).model_copy(update={"refused_task_types": chosen.refused})
    for problem in capabilities.probe_errors:
        errors.print(f"[yellow]hardware probe:[/yellow] {escape(problem)}")
    settings = AgentSettings(
        coordinator_url=url,
        worker_id=worker_id or f"{socket.gethostname()}-{os.getpid()}",
        slots=slots,
        codec=codec,
        work_dir=work_dir or Path.home() / ".cache" / "testfleet",
    )
    reaped = reap_leftovers(settings.work_dir)
    if reaped:
        errors.print(
            f"[yellow]ended {len(reaped)} task process group(s) left running by a worker "
            f"that died: {', '.join(map(str, reaped))}[/yellow]"
        )
    agent = WorkerAgent(settings, capabilities, executors)
    hardware = ",".join(h.value for h in capabilities.hardware)
    errors.print(
        f"testfleet worker {settings.worker_id}: {hardware}, "
        f"{slots} slot(s) -> {settings.coordinator_url}"
    )

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.stop)
        await prepare_executors(executors)
        try:
            await agent.run()
        finally:
            await close_executors(executors)

    try:
        asyncio.run(serve())
    except WorkerRefusedError as exc:
        fail(f"the coordinator refused this worker: {exc}")


def demo(
    db: Annotated[
        Path, typer.Option(help="DuckDB file the demo writes (replaced if it is the demo's own).")
    ] = Path("demo-output/testfleet-demo.duckdb"),
    workers_count: Annotated[int, typer.Option("--workers", min=1, max=32)] = 3,
    slots: Annotated[int, typer.Option(min=1, max=64, help="Slots per worker.")] = 2,
) -> None:
    """Start a coordinator and local workers, run an example batch, print a summary."""
    from testfleet.cli.demo import run_demo

    raise typer.Exit(run_demo(db, workers_count, slots, console))
