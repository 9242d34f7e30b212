"""A coordinator on PostgreSQL: a standby until it wins the lease, the leader while it holds it.

Callers: ``testfleet coordinator --store postgresql://…`` (``cli/processes.py``)
through :func:`run_ha_coordinator`. One uvicorn server serves the process's
listeners for its whole life; what it serves is :class:`RoleSwitch`, which
hands each request to the app of the current role:

- standby: :class:`~testfleet.coordinator.standby.StandbyApp` (503 naming the
  leader) while :meth:`Leadership.campaign` watches the lease;
- leader: the full coordinator app (:func:`create_app` over the store opened
  at the won epoch, which recovers running attempts from the store as a
  restart does), its lifespan (the loop, the alerts) entered when it starts
  leading and left when it stops;
- back to standby, in the same process, when :meth:`Leadership.hold` says
  the lease is lost (not renewed in time, the connection gone, another
  epoch) or the leader's loop stopped (``StoreFenced``, PostgreSQL gone): new
  requests get the standby's answers at once, the old app then stops its loop
  and closes its worker channels, and the campaign starts again. A store
  failure therefore recovers by itself: the next leader (maybe this process)
  loads the state again from PostgreSQL.

Two coordinators whose shared settings differ: the second refuses to start
(:class:`StartupError` naming the settings); one that finds out later (both
started at once) stops the process with the same message. Never a second
leader: the lease decides who leads, the settings only who may stand by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import FastAPI

from testfleet.clock import MonotonicClock
from testfleet.coordinator.alerts.config import AlertsConfig
from testfleet.coordinator.app import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    coordinator_server,
    create_app,
    exit_zero_after_sigterm,
    served_url,
    with_public_url,
)
from testfleet.coordinator.leadership import (
    DEFAULT_LEASE_SECONDS,
    CoordinatorRole,
    Identity,
    LeaderInfo,
    Leadership,
    LeaseLost,
    PostgresLease,
    SettingsMismatch,
)
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.standby import StandbyApp
from testfleet.coordinator.startup import StartupError, bind_listeners
from testfleet.security.pki import CertificateAuthority
from testfleet.security.tls import ServerTlsFiles
from testfleet.store import StoreError
from testfleet.store.contract import CoordinatorStore

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Exit status of a coordinator whose shared settings differ from the leader's
#: (found after start-up; at start-up it is the usual one-line error, status 1).
SETTINGS_MISMATCH_EXIT = 3

#: Opens the store for a leader of ``epoch`` (fenced), or unfenced for None.
StoreOpener = Callable[[int | None], CoordinatorStore]


class RoleSwitch:
    """The ASGI app a coordinator on PostgreSQL serves (see the module docstring).

    ``build_leader(epoch)`` makes the leader's app (blocking: it opens the
    store and loads the state; run in a thread). ``on_fatal`` is called when
    the process must stop (settings that differ from a live leader's)."""

    def __init__(self, leadership: Leadership, build_leader: Callable[[int], FastAPI]) -> None:
        self.leadership = leadership
        self.build_leader = build_leader
        self.standby = StandbyApp(lambda: self.leadership.known)
        self.current: ASGIApp = self.standby
        self.role = CoordinatorRole.STANDBY
        self.leader_app: FastAPI | None = None
        #: Why the process must stop (set before ``on_fatal`` is called).
        self.fatal: str | None = None
        self.on_fatal: Callable[[], None] = lambda: None
        self._stop: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.current(scope, receive, send)

    def begin_shutdown(self) -> None:
        """SIGTERM/SIGINT arrived (the server's handler calls this): a leader
        refuses new submissions while it commits what is in flight."""
        if self.leader_app is not None:
            self.leader_app.state.loop.begin_shutdown()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start(self) -> None:
        """Begin standing by (the server's lifespan start-up; tests call it directly)."""
        self._stop = asyncio.Event()
        self._runner = asyncio.create_task(self.run(), name="coordinator-roles")

    async def stop(self) -> None:
        """Stop whatever role runs: a leader commits what is in flight first,
        and only then gives the lease up (so a successor never fences that commit)."""
        if self._stop is not None:
            self._stop.set()
        if self._runner is not None:
            with contextlib.suppress(BaseException):
                await self._runner

    async def run(self) -> None:
        """Stand by, lead, stand by again... until :meth:`stop` (or a fatal mismatch)."""
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                epoch = await self._unless_stopped(self.leadership.campaign())
            except SettingsMismatch as exc:
                self.fatal = str(exc)
                log.error("%s", exc)
                self.on_fatal()
                return
            if epoch is None:
                await self.leadership.backend.release()
                return
            await self._lead(epoch)

    async def _unless_stopped(self, work: Coroutine[Any, Any, T]) -> T | None:
        """``work``'s value, or None (``work`` cancelled) if :meth:`stop` comes first."""
        assert self._stop is not None
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if task in done and not self._stop.is_set():
            return task.result()
        # Stopping: a lease won at the same moment is given back (by cancelling
        # the campaign's caller before hold(); release() drops the lock).
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return None

    async def _lead(self, epoch: int) -> None:
        apps: list[FastAPI] = []

        def failed() -> BaseException | None:
            return apps[0].state.loop.failure if apps else None

        # Renewing from the moment the lease is won: loading a large state
        # must not let the lease lapse.
        holder = asyncio.create_task(self.leadership.hold(failed), name="lease")
        try:
            try:
                app = await asyncio.to_thread(self.build_leader, epoch)
            except (StoreError, OSError) as exc:
                log.error("won the lease (epoch %d) but cannot open the store: %s", epoch, exc)
                await self.leadership.clock.sleep(self.leadership.poll_seconds)
                return
            apps.append(app)
            try:
                async with app.router.lifespan_context(app):
                    reason = await self._serve_as_leader(app, epoch, holder)
            except Exception as exc:  # the leader's shutdown failed (e.g. fenced flush)
                reason = f"stopping failed: {exc}"
            log.info("standing by: leadership of epoch %d ended (%s)", epoch, reason)
        finally:
            # Released only now, after the leader's last commit.
            holder.cancel()
            with contextlib.suppress(BaseException):
                await holder
            self.leadership.known = LeaderInfo(None, epoch)

    async def _serve_as_leader(self, app: FastAPI, epoch: int, holder: asyncio.Task[str]) -> str:
        assert self._stop is not None
        self.leader_app = app
        self.current = app
        self.role = CoordinatorRole.LEADER
        log.info("leading: epoch %d", epoch)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({holder, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            # New requests get the standby's answers from here on.
            self.current = self.standby
            self.role = CoordinatorRole.STANDBY
            self.leader_app = None
        if holder in done:
            return holder.result() if not holder.cancelled() else "cancelled"
        return "the process is stopping"


def run_ha_coordinator(
    dsn: str,
    open_store: StoreOpener,
    *,
    host: str = "127.0.0.1",
    port: int = 8700,
    settings: CoordinatorSettings | None = None,
    log_level: str = "warning",
    announce: Callable[[str], None] | None = None,
    tls: ServerTlsFiles | None = None,
    enrolment_ca: CertificateAuthority | None = None,
    alerts: AlertsConfig | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    scrub: Callable[[str], str] = lambda text: text,
) -> None:
    """Serve a coordinator on PostgreSQL at ``dsn`` until SIGINT/SIGTERM.

    Before announcing anything it binds the port, opens the store once
    (creating or checking the schema: an unreachable server, wrong
    credentials or a newer schema end here with the store's one-line error)
    and checks its shared settings against the live leader's; each failure
    raises :class:`StartupError`."""
    sys.setswitchinterval(0.0005)  # as run_coordinator, for the commit thread
    settings = settings or CoordinatorSettings()
    listeners = bind_listeners(host, port)
    try:
        bound_port = listeners[0].getsockname()[1]
        settings = with_public_url(settings, host, bound_port, tls)
        try:
            open_store(None).close()
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        leadership = Leadership(
            PostgresLease(dsn, scrub=scrub),
            MonotonicClock(),
            Identity.of_this_process(settings.public_url),
            settings,
            lease_seconds=lease_seconds,
        )
        _check_settings(leadership)
        chosen = settings

        def build_leader(epoch: int) -> FastAPI:
            store = open_store(epoch)
            try:
                return create_app(
                    None,
                    chosen,
                    require_client_certificate=tls is not None and tls.client_ca is not None,
                    enrolment_ca=enrolment_ca,
                    alerts=alerts,
                    store=store,
                    epoch=epoch,
                )
            except BaseException:
                store.close()
                raise

        switch = RoleSwitch(leadership, build_leader)
        if announce is not None:
            announce(served_url(host, bound_port, tls))
        server = coordinator_server(switch, host, bound_port, settings, log_level, tls)
        switch.on_fatal = lambda: setattr(server, "should_exit", True)
        server.on_exit = switch.begin_shutdown
        with exit_zero_after_sigterm():
            server.run(sockets=listeners)
        if switch.fatal is not None:
            raise SettingsMismatch(switch.fatal)
    finally:
        for listener in listeners:
            listener.close()


def _check_settings(leadership: Leadership) -> None:
    """:class:`StartupError` if a live leader's shared settings differ from ours,
    or PostgreSQL cannot be asked (before the server's event loop exists)."""
    try:
        asyncio.run(leadership.check_settings())
    except SettingsMismatch as exc:
        raise StartupError(str(exc)) from None
    except LeaseLost as exc:
        raise StartupError(f"cannot read the coordinator lease: {exc}") from None


def run_on_postgres(dsn: str, **options: Any) -> None:
    """:func:`run_ha_coordinator` over :func:`testfleet.store.open_store` (the
    CLI's entry; ``options`` are run_ha_coordinator's keywords)."""
    from testfleet.store import open_store
    from testfleet.store.postgres.dsn import parse_dsn

    try:
        checked = parse_dsn(dsn)
    except StoreError as exc:
        raise StartupError(str(exc)) from None

    def opener(epoch: int | None) -> CoordinatorStore:
        return open_store(dsn, epoch=epoch)

    run_ha_coordinator(dsn, opener, scrub=checked.scrub, **options)
