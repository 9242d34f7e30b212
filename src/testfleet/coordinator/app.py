"""The coordinator process: the ASGI app and how to run it.

Callers: ``testfleet coordinator`` (via :func:`run_coordinator`), ``testfleet
demo``, and integration tests. :func:`create_app` opens the DuckDB file
(the only process that does), rebuilds state from it, and wires the REST API,
the worker channel and the loop; the lifespan starts and stops the loop so that
a shutdown commits what was accepted before the file is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, WebSocket
from fastapi.responses import JSONResponse

import testfleet
from testfleet.clock import Clock, SystemClock
from testfleet.coordinator.admin_api import build_admin_router
from testfleet.coordinator.alerts.api import build_alerts_router
from testfleet.coordinator.alerts.config import AlertsConfig
from testfleet.coordinator.alerts.engine import AlertEngine
from testfleet.coordinator.alerts.notify import Notifier
from testfleet.coordinator.alerts.regression_source import store_regressions
from testfleet.coordinator.alerts.rules import RegressionFinder
from testfleet.coordinator.api import build_router
from testfleet.coordinator.api_errors import BODY_TOO_LARGE, add_error_handlers
from testfleet.coordinator.auth import Auth, require
from testfleet.coordinator.backup_api import build_backup_router
from testfleet.coordinator.backup_schedule import PARTIAL, BackupSchedule
from testfleet.coordinator.connections import ConnectionRegistry
from testfleet.coordinator.dashboard import add_dashboard
from testfleet.coordinator.docs_page import add_docs_page
from testfleet.coordinator.enrolment_api import build_enrolment_router
from testfleet.coordinator.flaky_tests_metric import FlakyTestsGauge
from testfleet.coordinator.grpc_worker_channel import GrpcEndpoint, GrpcWorkerServer
from testfleet.coordinator.http_protocol import limited_http_protocol
from testfleet.coordinator.limits import RateLimiter, RateLimitMiddleware
from testfleet.coordinator.log_api import build_log_router
from testfleet.coordinator.loop import CoordinatorLoop
from testfleet.coordinator.metrics import InFlightMiddleware, Metrics
from testfleet.coordinator.metrics_api import build_metrics_router
from testfleet.coordinator.openapi import openapi_document
from testfleet.coordinator.peer_certificate import with_peer_certificate
from testfleet.coordinator.public_url import derive_public_url
from testfleet.coordinator.pytest_runs_api import build_test_run_router
from testfleet.coordinator.query_api import build_query_router
from testfleet.coordinator.regressions_api import RegressionWatch, build_regressions_router
from testfleet.coordinator.revocation_api import build_revocation_router
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.startup import (
    FD_HEADROOM,
    StartupError,
    bind_listeners,
    database_failure,
    raise_file_limit,
)
from testfleet.coordinator.state import CoordinatorState
from testfleet.coordinator.state_view import StateView
from testfleet.coordinator.worker_channel import WORKER_CHANNEL_PATH, serve_worker
from testfleet.protocol.codec import MAX_FRAME_BYTES
from testfleet.security.pki import CertificateAuthority
from testfleet.security.tls import ServerTlsFiles, harden_server_context
from testfleet.security.tokens import Role
from testfleet.store import Store, StoreError
from testfleet.store.contract import CoordinatorStore
from testfleet.store.encryption import DatabaseKey

log = logging.getLogger(__name__)

OPENAPI_PATH = "/openapi.json"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413, before anything parses them.

    Checks Content-Length up front and counts chunked bodies as they arrive, so
    a 50 MB upload costs the coordinator at most ``limit`` bytes of memory.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = BODY_TOO_LARGE.response(
            f"request body exceeds {self.limit} bytes; split the submission into smaller batches"
        )
        await response(scope, receive, send)


def create_app(
    db_path: str | Path | None,
    settings: CoordinatorSettings | None = None,
    clock: Clock | None = None,
    *,
    require_client_certificate: bool = False,
    db_key: DatabaseKey | None = None,
    enrolment_ca: CertificateAuthority | None = None,
    alerts: AlertsConfig | None = None,
    find_regressions: RegressionFinder | None = None,
    store: CoordinatorStore | None = None,
    epoch: int = 0,
    grpc: GrpcEndpoint | None = None,
) -> FastAPI:
    """Build a coordinator app over the DuckDB file at ``db_path`` (encrypted
    with ``db_key`` when one is given).

    ``require_client_certificate``: the worker channel refuses a worker without
    a TLS client certificate (``--client-ca``; see ``worker_channel.py``).
    ``enrolment_ca``: the CA that signs enrolling workers' certificates
    (``--enrol-ca-dir``; see ``enrolment_api.py``); None: enrolment is off.
    ``alerts``: the alert rules and webhook receivers (``--alerts``; None: the
    defaults, no receivers); ``find_regressions``: the benchmark regression
    detector the ``benchmark_regression`` rule asks (None: open regressions in
    this store's history, ``alerts/regression_source.py``).

    ``store``: an open store to serve instead of the DuckDB file (``db_path``
    is then unused): the PostgreSQL store of a leader that won ``epoch``
    (``coordinator/roles.py``). The app owns it from here and closes it at
    shutdown. Backups (the route and ``--backup-every``) are DuckDB's: with
    another store they are left out (PostgreSQL has pg_dump).

    ``grpc``: also serve the worker channel over gRPC there (``--grpc-port``;
    ``grpc_worker_channel.py``), started and stopped with the loop; the port
    it bound is ``app.state.grpc_port``."""
    settings = settings or CoordinatorSettings()
    clock = clock or SystemClock()
    # The one place that names DuckDB: the rest of the coordinator knows the
    # store by its contract.
    database: Store | None = None
    own_snapshot_dir = False
    if store is None:
        if db_path is None:
            raise ValueError("create_app needs a db_path or a store")
        snapshot_dir, own_snapshot_dir = _snapshot_dir(settings)
        database = Store(
            db_path,
            threads=settings.db_threads,
            encryption_key=db_key,
            snapshot_dir=snapshot_dir,
        )
        store = database
    elif isinstance(store, Store):
        database = store
    recovered = store.load_state()
    for problem in recovered.unreadable_rows:
        log.warning("left out at start-up, the rest carries on: %s", problem)
    state = CoordinatorState(
        settings, clock.now(), recovered, store.all_task_ids(), store.worker_revocations()
    )
    # Workers' speeds as history left them, before any result arrives
    # (coordinator/worker_speed.py): a restart does not forget who is fast.
    state.speeds.seed(store.speed_samples())
    loop = CoordinatorLoop(state, store, clock, ConnectionRegistry())
    started = time.monotonic()
    alerts = alerts or AlertsConfig()
    view = StateView(state)
    metrics = Metrics(clock, view, lambda: len(loop.connections))
    metrics.leader_epoch = epoch
    loop.observer = metrics
    notifier = (
        Notifier(alerts.receivers, store, clock, external_url=settings.public_url)
        if alerts.receivers
        else None
    )
    if notifier is not None:
        notifier.on_result = lambda kind, status: metrics.count_notification(kind, status)
    engine = AlertEngine(
        alerts,
        view,
        store,
        clock,
        notifier=notifier,
        find_regressions=find_regressions or store_regressions(store),
    )
    engine.restore()
    metrics.set_firing_alerts(engine.firing_by_rule)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runner = asyncio.create_task(loop.run(), name="coordinator-loop")
        ticker = asyncio.create_task(loop.tick_forever(settings.tick_seconds), name="ticker")
        # Alerts and the lag probe run beside the loop, never in it
        # (coordinator/alerts/engine.py, coordinator/metrics.py).
        watchers = [
            asyncio.create_task(engine.run(), name="alerts"),
            asyncio.create_task(metrics.probe_lag(), name="lag-probe"),
        ]
        if notifier is not None:
            watchers.append(asyncio.create_task(notifier.run(), name="notifications"))
        grpc_server: GrpcWorkerServer | None = None
        if grpc is not None:
            grpc_server = GrpcWorkerServer(
                loop,
                store,
                auth.record_events,
                require_certificate=require_client_certificate,
                insecure=settings.insecure,
            )
            app.state.grpc_port = await grpc_server.start(grpc.host, grpc.port, grpc.tls)
        if (
            settings.backup_every_seconds > 0
            and settings.backup_dir is not None
            and database is not None
        ):
            schedule = BackupSchedule(
                database.snapshot,
                settings.backup_dir,
                settings.backup_every_seconds,
                settings.backup_keep,
                clock,
            )
            watchers.append(asyncio.create_task(schedule.run(), name="backups"))
        try:
            yield
        finally:
            if grpc_server is not None:
                # Its streams close as a restart (1012), as uvicorn closes the WebSockets.
                await grpc_server.stop()
            for watcher in watchers:
                watcher.cancel()
            for watcher in watchers:
                with contextlib.suppress(BaseException):
                    await watcher
            ticker.cancel()
            loop.stop()
            try:
                await asyncio.wait_for(asyncio.shield(runner), 10)
            except (TimeoutError, Exception):
                runner.cancel()
                with contextlib.suppress(BaseException):
                    await runner
            await loop.connections.close_all()
            if loop.failure is None and loop.degraded is None:
                # Commit whatever arrived while the loop was stopping.
                await loop.flush()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            store.close()
            if own_snapshot_dir:
                shutil.rmtree(snapshot_dir, ignore_errors=True)

    app = FastAPI(
        title="testfleet coordinator",
        version=testfleet.__version__,
        description="Distributed test and benchmark runs across a fleet of machines.",
        lifespan=lifespan,
        # Both of FastAPI's pages load from a CDN; docs_page serves /docs offline.
        docs_url=None,
        redoc_url=None,
        # Served below, behind a viewer token like every read (see auth.py).
        openapi_url=None,
    )
    app.state.loop = loop
    app.state.metrics = metrics
    app.state.store = store
    auth = Auth(store, clock)
    app.state.auth = auth
    #: Read by /metrics: ``engine.firing_count()``, ``engine.notifier.results``.
    app.state.alerts = engine
    # Added first, so innermost: counts the requests that got past the limits.
    app.add_middleware(InFlightMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    if settings.rate_limit_per_second > 0:
        # Added last, so outermost: a refused request costs no body reading.
        limiter = RateLimiter(clock, settings.rate_limit_per_second, settings.rate_limit_burst)
        app.add_middleware(
            RateLimitMiddleware, limiter=limiter, audit=auth.record_events, known=auth.knows
        )
    app.include_router(
        build_router(loop, view, store, settings.max_tasks_per_submit, started, auth)
    )
    app.include_router(build_test_run_router(view, store, auth))
    app.include_router(build_query_router(store, auth))
    app.include_router(build_admin_router(auth))
    if database is not None:
        app.include_router(build_backup_router(database, encrypted=db_key is not None))
    app.include_router(build_revocation_router(loop, view, auth))
    app.include_router(build_enrolment_router(auth, enrolment_ca))
    app.include_router(build_alerts_router(engine, store))
    watch = RegressionWatch(store, metrics, clock)
    flaky = FlakyTestsGauge(store, metrics, clock)
    app.include_router(build_metrics_router(metrics, watch, flaky))
    app.include_router(build_regressions_router(watch))
    app.include_router(build_log_router(view, state.log_tails, store, clock))
    viewer = [Depends(require(Role.VIEWER))]

    @app.get(OPENAPI_PATH, include_in_schema=False, dependencies=viewer)
    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    add_docs_page(app, dependencies=viewer)
    add_dashboard(
        app,
        loop=loop,
        view=view,
        store=store,
        clock=clock,
        heartbeat_timeout=settings.heartbeat_timeout_seconds,
        loop_events=lambda: loop.stats.events,
        tails=state.log_tails,
        alerts=engine,
        alert_store=store,
        health=metrics.health,
    )
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    add_error_handlers(app)

    @app.websocket(WORKER_CHANNEL_PATH)
    async def worker_channel(socket: WebSocket) -> None:
        await serve_worker(
            socket,
            loop,
            store,
            auth.record_events,
            require_certificate=require_client_certificate,
            insecure=settings.insecure,
        )

    return app


def _snapshot_dir(settings: CoordinatorSettings) -> tuple[Path, bool]:
    """Where the store may write snapshots, and whether the app made it (and removes
    it at shutdown): ``--backup-dir``, else a private temporary directory (the
    backup route's snapshot waits there while it is sent). Snapshots a route
    left behind (a client that went away mid-download) are removed here."""
    if settings.backup_dir is None:
        return Path(tempfile.mkdtemp(prefix="testfleet-snapshots-")), True
    for pattern in (".download-*.duckdb*", f"{PARTIAL}*"):
        for leftover in settings.backup_dir.glob(pattern):
            leftover.unlink(missing_ok=True)
    return settings.backup_dir, False


def run_coordinator(
    db_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8700,
    settings: CoordinatorSettings | None = None,
    log_level: str = "warning",
    announce: Callable[[str], None] | None = None,
    tls: ServerTlsFiles | None = None,
    db_key: DatabaseKey | None = None,
    enrolment_ca: CertificateAuthority | None = None,
    alerts: AlertsConfig | None = None,
    grpc_port: int | None = None,
) -> None:
    """Serve a coordinator until SIGINT/SIGTERM (uvicorn handles both gracefully).

    Binds the port and opens the database first, and only then calls
    ``announce`` with the address it serves on (``testfleet coordinator``
    prints it), so nothing is announced that cannot be served. Either failing
    raises :class:`StartupError` with a one-line explanation naming the
    process in the way. The bound sockets are handed to uvicorn: no other
    process can take the port between the check and the serving.

    ``tls`` (checked files, :func:`testfleet.security.tls.check_server_files`):
    serve HTTPS and WSS on the one port, TLS 1.2 at least. With a client CA the
    TLS layer asks for a client certificate but does not insist
    (``CERT_OPTIONAL``: REST clients have none), verifies any it gets against
    that CA, and the worker channel insists (``serve_worker``).

    ``grpc_port``: also serve the worker channel over gRPC on that port of
    ``host``, with the same TLS files (``grpc_worker_channel.py``). Checked
    free before anything is announced; gRPC binds it when the app starts.
    """
    # The DuckDB commit runs in a thread and hands the GIL back and forth with
    # the event loop a dozen times per commit; at the default 5 ms switch
    # interval a busy loop made each commit wait tens of milliseconds for it.
    sys.setswitchinterval(0.0005)
    settings = settings or CoordinatorSettings()
    # One socket per connected worker and per REST connection (issue 14).
    raise_file_limit(settings.max_workers + settings.max_http_connections + FD_HEADROOM)
    grpc = None if grpc_port is None else grpc_endpoint(host, grpc_port, port, tls)
    listeners = bind_listeners(host, port)
    try:
        bound_port = listeners[0].getsockname()[1]
        settings = with_public_url(settings, host, bound_port, tls)
        try:
            app = create_app(
                db_path,
                settings,
                require_client_certificate=tls is not None and tls.client_ca is not None,
                db_key=db_key,
                enrolment_ca=enrolment_ca,
                alerts=alerts,
                grpc=grpc,
            )
        except StoreError as exc:
            raise StartupError(database_failure(db_path, exc)) from None
        if announce is not None:
            announce(served_url(host, bound_port, tls))
        server = coordinator_server(app, host, bound_port, settings, log_level, tls)
        server.on_exit = app.state.loop.begin_shutdown
        with exit_zero_after_sigterm():
            server.run(sockets=listeners)
    finally:
        for listener in listeners:
            listener.close()


def grpc_endpoint(
    host: str, grpc_port: int, http_port: int, tls: ServerTlsFiles | None
) -> GrpcEndpoint:
    """``--grpc-port``'s endpoint, its port checked free now (:class:`StartupError`
    naming the flag if not), so that start-up fails before it announces anything."""
    if grpc_port != 0 and grpc_port == http_port:
        raise StartupError(f"--grpc-port {grpc_port} is also --port: gRPC needs a port of its own")
    try:
        for probe in bind_listeners(host, grpc_port):
            probe.close()
    except StartupError as exc:
        raise StartupError(f"--grpc-port: {exc}") from None
    return GrpcEndpoint(host, grpc_port, tls)


def with_public_url(
    settings: CoordinatorSettings, host: str, port: int, tls: ServerTlsFiles | None
) -> CoordinatorSettings:
    """``settings`` with ``--public-url``, derived from the bound address if not given
    (run_coordinator's and ``roles.run_ha_coordinator``'s; a standby names it)."""
    if settings.public_url:
        return settings
    public_url = derive_public_url(host, port, tls=tls is not None)
    return dataclasses.replace(settings, public_url=public_url)


def served_url(host: str, port: int, tls: ServerTlsFiles | None, protocol: str = "http") -> str:
    """The address announced at start-up: ``http(s)://HOST:PORT`` (``protocol``
    ``grpc``: ``grpc(s)://HOST:PORT``, ``--grpc-port``'s)."""
    shown_host = f"[{host}]" if ":" in host else host
    scheme = f"{protocol}s" if tls is not None else protocol
    return f"{scheme}://{shown_host}:{port}"


def coordinator_server(
    app: ASGIApp,
    host: str,
    port: int,
    settings: CoordinatorSettings,
    log_level: str,
    tls: ServerTlsFiles | None,
) -> GracefulServer:
    """The uvicorn server for ``app`` on the bound ``port`` (run_coordinator's,
    and ``roles.run_ha_coordinator``'s over the switch between its roles)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws_max_size=MAX_FRAME_BYTES,
        http=limited_http_protocol(settings.header_timeout_seconds, settings.max_http_connections),
        ws_ping_interval=None,  # our heartbeats detect dead workers
        timeout_graceful_shutdown=5,
        lifespan="on",
        **_tls_options(tls),
    )
    if tls is not None:
        config.load()
        # load() built both: the context from the TLS options, the class from ws="auto".
        assert config.ssl is not None
        assert config.ws_protocol_class is not None
        harden_server_context(config.ssl)
        config.ws_protocol_class = with_peer_certificate(config.ws_protocol_class)
    return GracefulServer(config)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, telling the coordinator loop the moment SIGTERM or
    SIGINT arrives (:meth:`CoordinatorLoop.begin_shutdown`): from then on
    submissions are refused with 503 and health says ``shutting_down`` while
    uvicorn stops listening, closes the worker channels (close code 1012,
    "service restart": workers reconnect with backoff), and the lifespan's
    exit commits what is in flight."""

    on_exit: Callable[[], None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.on_exit is not None:
            self.on_exit()
        super().handle_exit(sig, frame)


@contextlib.contextmanager
def exit_zero_after_sigterm() -> Iterator[None]:
    """uvicorn re-raises a caught SIGTERM once it has shut down, so that the
    default action kills the process: a clean, committed shutdown would then
    exit 143, which a supervisor reads as a crash. While serving, the
    handler it restores and re-raises into is this no-op one: the
    coordinator returns and exits 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _tls_options(tls: ServerTlsFiles | None) -> dict[str, Any]:
    """uvicorn's TLS options for ``tls`` (none for plain HTTP)."""
    if tls is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(tls.cert), "ssl_keyfile": str(tls.key)}
    if tls.client_ca is not None:
        options |= {"ssl_ca_certs": str(tls.client_ca), "ssl_cert_reqs": ssl.CERT_OPTIONAL}
    return options
