"""The commands that start processes: ``coordinator``, ``worker`` and ``demo``.

Callers: registered on the main app (``cli/app.py``). Each imports what it
runs inside the function, so ``testfleet --help`` and the client commands
never pay for importing the coordinator, the worker or their dependencies.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from testfleet.cli.app import (
    CoordinatorOption,
    console,
    errors,
    fail,
    parse_tags,
)
from testfleet.cli.process_options import (
    BrowserAssetsOption,
    BrowserOption,
    ProbeBackendsOption,
    backup_schedule,
    browser_settings,
    enrolment_ca_option,
    size_option,
)
from testfleet.cli.worker_credential_options import (
    enrolled_certificate,
    worker_addresses,
    worker_connector,
    worker_token,
)
from testfleet.client import CA_ENV
from testfleet.domain.enums import Codec
from testfleet.scheduling.policies import PolicyName
from testfleet.security.enrolment import ENROL_TOKEN_ENV

if TYPE_CHECKING:
    pass


def coordinator(
    db: Annotated[
        Path | None,
        typer.Option(help="DuckDB file (created if missing). Default: testfleet.duckdb."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            envvar="TESTFLEET_STORE",
            help="PostgreSQL instead of a DuckDB file: postgresql://USER[:PW]@HOST[:PORT]/DB. "
            "Start several coordinators on one database: one leads, the others stand by "
            '(README "Failover on PostgreSQL").',
            show_default=False,
        ),
    ] = None,
    lease_seconds: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="With --store: a leader that cannot renew its lease this long stops "
            "serving, and a standby takes over from a leader silent this long.",
        ),
    ] = 10.0,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8700,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Also serve the worker channel over gRPC on this port (same host, TLS "
            "files and credentials); workers join with --coordinator grpc(s)://HOST:PORT.",
            show_default=False,
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float, typer.Option(help="Seconds between worker heartbeats.")
    ] = 2.0,
    heartbeat_timeout: Annotated[
        float, typer.Option(help="A worker silent this long is declared lost.")
    ] = 15.0,
    disconnect_grace: Annotated[
        float,
        typer.Option(
            min=0,
            help="A worker whose connection closed (its process died) is declared lost "
            "this many seconds later, unless it reconnects (at most --heartbeat-timeout); "
            "a silent one waits for --heartbeat-timeout.",
        ),
    ] = 3.0,
    max_lost_attempts: Annotated[
        int,
        typer.Option(
            min=0,
            help="Retries of a task whose worker was lost; one more lost attempt fails it "
            "as lost_too_often (a task that kills its workers).",
        ),
    ] = 3,
    db_threads: Annotated[
        int,
        typer.Option(min=0, help="DuckDB threads; 0 = one per core (small batches run best on 1)."),
    ] = 1,
    scheduling_policy: Annotated[
        PolicyName,
        typer.Option(
            help="How queued tasks are placed: best-fit (the least capable worker that fits) "
            "or estimated-finish (the fastest, by measured worker speeds and past durations; "
            "README: Scheduling from history).",
        ),
    ] = PolicyName.BEST_FIT,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS/WSS with this PEM certificate.", show_default=False),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The certificate's key (mode 0600).", show_default=False)
    ] = None,
    client_ca: Annotated[
        Path | None,
        typer.Option(
            help="Workers must present a certificate from this CA; their id is the one in it.",
            show_default=False,
        ),
    ] = None,
    rate_limit: Annotated[
        float,
        typer.Option(min=0, help="Requests per second one client may keep up; 0 = no limit."),
    ] = 20.0,
    rate_burst: Annotated[
        int, typer.Option(min=1, help="Requests one client may send at once before the rate.")
    ] = 100,
    header_timeout: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds a connection has to send a request's headers."),
    ] = 10.0,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Open REST connections served at once (health excepted).")
    ] = 1_000,
    max_workers: Annotated[int, typer.Option(min=1, help="Workers connected at once.")] = 10_000,
    max_worker_frames: Annotated[
        float, typer.Option(min=1, help="Frames per second one worker may send.")
    ] = 1_000.0,
    max_queued_per_submitter: Annotated[
        int,
        typer.Option(
            min=0,
            help="Unfinished (queued, assigned or running) tasks one token may have; "
            "a submission past it is refused whole (429). 0 = no limit.",
        ),
    ] = 0,
    speculation: Annotated[
        bool,
        typer.Option(
            help="Give a straggling idempotent attempt a speculative copy on an idle worker "
            "(README: Stragglers).",
        ),
    ] = True,
    speculation_factor: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="A straggler runs over its estimate times this (and the minimum over it).",
        ),
    ] = 2.0,
    speculation_min_seconds: Annotated[
        float,
        typer.Option(
            min=0.0, help="A straggler runs at least this many seconds over its estimate."
        ),
    ] = 30.0,
    db_key_file: Annotated[
        Path | None,
        typer.Option(
            envvar="TESTFLEET_DB_KEY_FILE",
            help="Encrypt the DuckDB file with the key in this file (mode 600); "
            "or put the key itself in TESTFLEET_DB_KEY.",
            show_default=False,
        ),
    ] = None,
    enrol_ca_dir: Annotated[
        Path | None,
        typer.Option(
            help="Enrol workers with enrolment tokens: sign their CSRs with the CA in this "
            "folder (from `certs init`; its ca.pem is the --client-ca unless given). Needs TLS.",
            show_default=False,
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Allow plain HTTP on a non-loopback --host, and worker tokens over plain "
            "HTTP from any address (warned at every start).",
        ),
    ] = False,
    alerts: Annotated[
        Path | None,
        typer.Option(
            help='Alert rules and webhook receivers (TOML; README "Alerts"). '
            "Default: every rule with its default thresholds, no webhooks.",
            show_default=False,
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="Where people reach this coordinator (e.g. https://fleet.example.com:8443); "
            "alert notifications link to its dashboard. Default: from --host, --port and TLS.",
            show_default=False,
        ),
    ] = None,
    backup_dir: Annotated[
        Path | None,
        typer.Option(
            help="Directory for scheduled backups (--backup-every), created if missing.",
            show_default=False,
        ),
    ] = None,
    backup_every: Annotated[
        str | None,
        typer.Option(
            help="Take a backup into --backup-dir this often, e.g. 1h, 30m, 1d.",
            show_default=False,
        ),
    ] = None,
    backup_keep: Annotated[
        int, typer.Option(min=1, help="Scheduled backups kept; older ones are deleted.")
    ] = 24,
) -> None:
    """Run a coordinator: REST API, worker channel and the DuckDB file it alone owns
    (or, with --store, a PostgreSQL database it shares with standbys)."""
    from testfleet.cli.coordinator_store import choose_store, masked
    from testfleet.coordinator.alerts.config import AlertsConfigError, load_alerts_config
    from testfleet.coordinator.app import run_coordinator, served_url
    from testfleet.coordinator.exposure import NoticeLevel, decide_exposure
    from testfleet.coordinator.leadership import SettingsMismatch
    from testfleet.coordinator.public_url import PublicUrlError, check_public_url
    from testfleet.coordinator.roles import SETTINGS_MISMATCH_EXIT, run_on_postgres
    from testfleet.coordinator.settings import CoordinatorSettings
    from testfleet.coordinator.startup import StartupError
    from testfleet.security.tls import ServerTlsFiles, TlsFileError, check_server_files
    from testfleet.store import StoreError
    from testfleet.store.encryption import KEY_ENV, key_from_env, read_key_file

    for flag, value in (
        ("--speculation-factor", speculation_factor),
        ("--speculation-min-seconds", speculation_min_seconds),
    ):
        if not math.isfinite(value):
            fail(f"{flag} must be a finite number of seconds or a factor, not {value}")
    if heartbeat_timeout <= heartbeat_interval:
        fail("--heartbeat-timeout must be longer than --heartbeat-interval")
    backup_every_seconds = backup_schedule(backup_every, backup_dir)
    try:
        alerts_config = load_alerts_config(alerts) if alerts is not None else None
    except AlertsConfigError as exc:
        fail(str(exc))
    try:
        checked_public_url = check_public_url(public_url) if public_url is not None else ""
    except PublicUrlError as exc:
        fail(str(exc))
    enrolment_ca = None
    if enrol_ca_dir is not None:
        enrolment_ca, client_ca = enrolment_ca_option(enrol_ca_dir, tls_cert, client_ca)
    tls: ServerTlsFiles | None = None
    if tls_cert is not None or tls_key is not None or client_ca is not None:
        if tls_cert is None or tls_key is None:
            fail("TLS needs both --tls-cert and --tls-key (--client-ca needs them too)")
        try:
            tls = check_server_files(tls_cert, tls_key, client_ca)
        except TlsFileError as exc:
            fail(str(exc))
    # Before the database key is read and anything is bound: a refusal costs nothing.
    exposure = decide_exposure(
        host, tls=tls is not None, client_ca=client_ca is not None, insecure=insecure
    )
    if exposure.refusal is not None:
        fail(exposure.refusal)
    try:
        env_key = key_from_env()
        if env_key is not None and db_key_file is not None:
            fail(f"give the database key once: --db-key-file or {KEY_ENV}, not both")
        db_key = read_key_file(db_key_file) if db_key_file is not None else env_key
    except StoreError as exc:
        fail(str(exc))
    chosen = choose_store(
        db,
        store,
        db_key=db_key is not None,
        backups=backup_dir is not None or backup_every is not None,
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    settings = CoordinatorSettings(
        heartbeat_interval_seconds=heartbeat_interval,
        heartbeat_timeout_seconds=heartbeat_timeout,
        disconnect_grace_seconds=disconnect_grace,
        max_lost_attempts=max_lost_attempts,
        db_threads=db_threads or None,
        scheduling_policy=scheduling_policy,
        rate_limit_per_second=rate_limit,
        rate_limit_burst=rate_burst,
        header_timeout_seconds=header_timeout,
        max_http_connections=max_connections,
        max_workers=max_workers,
        max_worker_frames_per_second=max_worker_frames,
        max_queued_per_submitter=max_queued_per_submitter,
        insecure=insecure,
        public_url=checked_public_url,
        backup_dir=None if backup_dir is None else backup_dir.absolute(),
        backup_every_seconds=backup_every_seconds,
        backup_keep=backup_keep,
        speculation_enabled=speculation,
        speculation_factor=speculation_factor,
        speculation_min_seconds=speculation_min_seconds,
    )

    def announce(url: str) -> None:
        # Printed whatever --log-level says, with the address: at every start
        # the operator sees how exposed this coordinator is.
        where = masked(chosen) if isinstance(chosen, str) else chosen
        errors.print(
            f"testfleet coordinator on {url} with {where}" + (" (encrypted)" if db_key else "")
        )
        if grpc_port is not None:
            errors.print(f"worker channel over gRPC on {served_url(host, grpc_port, tls, 'grpc')}")
        for notice in exposure.notices:
            if notice.level is NoticeLevel.WARNING:
                errors.print(f"[yellow]warning:[/yellow] {escape(notice.message)}", soft_wrap=True)
            else:
                errors.print(escape(notice.message), soft_wrap=True)

    # The options both kinds of coordinator take.
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "settings": settings,
        "log_level": log_level,
        "announce": announce,
        "tls": tls,
        "enrolment_ca": enrolment_ca,
        "alerts": alerts_config,
    }
    try:
        if isinstance(chosen, str):
            if grpc_port is not None:
                fail("--grpc-port: on PostgreSQL (--store) workers join by WebSocket only so far")
            run_on_postgres(chosen, lease_seconds=lease_seconds, **common)
        else:
            run_coordinator(chosen, db_key=db_key, grpc_port=grpc_port, **common)
    except (StartupError, StoreError) as exc:
        fail(str(exc))
    except SettingsMismatch as exc:
        fail(str(exc), code=SETTINGS_MISMATCH_EXIT)


def worker(
    coordinator: CoordinatorOption = None,
    slots: Annotated[int, typer.Option(min=1, max=4096, help="Attempts run at once.")] = 1,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="KEY=VALUE label tasks can require; repeat.")
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option(help="Stable id (default: HOSTNAME-PID).", show_default=False)
    ] = None,
    codec: Annotated[
        Codec, typer.Option(help="Frame encoding (protobuf: gRPC only).")
    ] = Codec.JSON,
    probe_torch: Annotated[
        bool, typer.Option("--probe-torch/--no-probe-torch", help="Ask torch what it sees.")
    ] = True,
    probe_backends: ProbeBackendsOption = True,
    browser: BrowserOption = None,
    browser_assets: BrowserAssetsOption = None,
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
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            envvar=CA_ENV,
            help="CA that issued the coordinator's certificate (https:// coordinators).",
            show_default=False,
        ),
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option(
            help="This worker's certificate; its id is the worker id.", show_default=False
        ),
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="The certificate's key (mode 0600).", show_default=False)
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="This worker's token (`tokens create --role worker --name ID`); else "
            "$TESTFLEET_TOKEN, --token-file or $TESTFLEET_TOKEN_FILE when there is no --cert.",
            show_default=False,
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the worker's token (mode 0600).", show_default=False),
    ] = None,
    enrol_token: Annotated[
        str | None,
        typer.Option(
            envvar=ENROL_TOKEN_ENV,
            help="A one-time enrolment token (tokens create --role enrol): with --cert-dir, "
            "get this worker's certificate from the coordinator on first start.",
            show_default=False,
            show_envvar=False,
        ),
    ] = None,
    cert_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where this worker keeps the key and certificate it enrolled (ID.pem, ID.key); "
            "used as they are once there.",
            show_default=False,
        ),
    ] = None,
    shutdown_grace: Annotated[
        float,
        typer.Option(
            min=0,
            help="On SIGTERM or Ctrl-C: seconds running tasks get to finish before the rest "
            "are handed back to the coordinator (a second signal hands them back at once).",
        ),
    ] = 30.0,
    max_task_memory: Annotated[
        str | None,
        typer.Option(
            help='Memory tasks may reserve in all, e.g. "16GiB" (default: the machine\'s).',
            show_default=False,
        ),
    ] = None,
    cpu_cores: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=4096,
            help="Cores tasks may be pinned to (default: all this process may use).",
            show_default=False,
        ),
    ] = None,
    disk: Annotated[
        str | None,
        typer.Option(
            help='Work-directory disk tasks may reserve, e.g. "100GB" (default: free space).',
            show_default=False,
        ),
    ] = None,
) -> None:
    """Join a coordinator as a worker (connects out; no inbound port needed)."""
    from testfleet.domain.resources import format_size
    from testfleet.worker.agent import AgentSettings, WorkerAgent, WorkerRefusedError
    from testfleet.worker.backend_probes import BackendProbes
    from testfleet.worker.executors.leftovers import reap_leftovers
    from testfleet.worker.executors.registry import (
        MISSING_FOR,
        AllowTypesError,
        choose_executors,
        close_executors,
        parse_allowed_types,
        prepare_executors,
    )
    from testfleet.worker.executors.resource_limits import ResourceLimiter
    from testfleet.worker.hardware import detect_capabilities
    from testfleet.worker.orphan_guard import start_orphan_guard

    url, enrolment_url = worker_addresses(coordinator)
    if cert_dir is not None or enrol_token:
        cert, key = enrolled_certificate(enrolment_url, ca, cert, cert_dir, enrol_token, worker_id)
    secret = worker_token(token, token_file, cert)
    connector, certified_id = worker_connector(url, ca, cert, key, secret, codec)
    if certified_id is not None and worker_id is not None and worker_id != certified_id:
        fail(
            f"--worker-id {worker_id!r} conflicts with --cert {cert}, issued to "
            f"{certified_id!r}: a worker's id is the one in its certificate; drop --worker-id"
        )
    try:
        allowed = None if allow_types is None else parse_allowed_types(allow_types)
    except AllowTypesError as exc:
        fail(str(exc))
    memory_cap = size_option("--max-task-memory", max_task_memory)
    disk_cap = size_option("--disk", disk)
    if secret is not None and certified_id is None and worker_id is None:
        fail(
            "a worker token is bound to one worker id: pass --worker-id, the --name it was "
            "created with (`testfleet tokens create --role worker --name ID`)"
        )
    worker_id = worker_id or certified_id
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
    browser_settings(browser, browser_assets)
    capabilities = detect_capabilities(
        tags=parse_tags(tag or []),
        task_types=list(executors),
        probe_torch=probe_torch,
        backend_probes=BackendProbes() if probe_backends else None,
    ).model_copy(update={"refused_task_types": chosen.refused})
    for problem in capabilities.probe_errors:
        errors.print(f"[yellow]hardware probe:[/yellow] {escape(problem)}")
    settings = AgentSettings(
        coordinator_url=url,
        worker_id=worker_id or f"{socket.gethostname()}-{os.getpid()}",
        slots=slots,
        codec=codec,
        work_dir=work_dir or Path.home() / ".cache" / "testfleet",
        shutdown_grace_seconds=shutdown_grace,
    )
    limiter = ResourceLimiter.detect(
        settings.work_dir, max_task_memory=memory_cap, cpu_cores=cpu_cores, disk=disk_cap
    )
    capabilities = capabilities.model_copy(update={"resources": limiter.advertised()})
    reaped = reap_leftovers(settings.work_dir)
    if reaped:
        errors.print(
            f"[yellow]ended {len(reaped)} task process group(s) left running by a worker "
            f"that died: {', '.join(map(str, reaped))}[/yellow]"
        )
    agent = WorkerAgent(settings, capabilities, executors, connector=connector, limiter=limiter)
    hardware = ",".join(h.value for h in capabilities.hardware)
    errors.print(
        f"testfleet worker {settings.worker_id}: {hardware}, "
        f"{slots} slot(s) -> {settings.coordinator_url}"
    )
    totals = limiter.advertised()
    errors.print(
        f"task limits: {format_size(totals.memory_bytes)} memory "
        f"(enforced by {totals.memory_enforcement.value}), {totals.cpu_cores} core(s), "
        f"{format_size(totals.disk_bytes)} disk"
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

    # Ends this worker's task processes if it dies without ending them (kill -9).
    guard = start_orphan_guard()
    try:
        asyncio.run(serve())
    except WorkerRefusedError as exc:
        fail(f"the coordinator refused this worker: {exc}")
    finally:
        if guard is not None:
            guard.close()
        limiter.close()


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
