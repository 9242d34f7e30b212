"""Warm pytest sessions for ``test`` tasks: a pool of session child processes.

Callers: :class:`~testfleet.worker.executors.pytest_run.PytestExecutor` owns
one :class:`SessionPool`; it :meth:`~SessionPool.acquire`\\ s a collected
session for each chunk, runs the node ids in it
(:meth:`~testfleet.worker.pytest_sessions.session_process.PytestSession.run_chunk`:
one process and its pipes, in ``session_process.py``), then
:meth:`~SessionPool.release`\\ s it for reuse or :meth:`~SessionPool.discard`\\ s
it (timeout, cancel, crash, a test that called ``pytest.exit()``). The worker
CLI calls :meth:`~SessionPool.prewarm` at start and :meth:`~SessionPool.close`
at exit (through the executor).

Decisions:

* A session is one ``session_child.py`` process (see its docstring for the
  protocol) in a process group of its own, so ending the group ends
  everything its tests started. Commands and events travel on two dedicated
  pipes; stdout and stderr share a third, drained into bounded tails.
* Sessions are keyed by (run id, project directory, interpreter, args,
  env, plugins): chunks of one run with the same options reuse a collected session;
  nothing is shared across runs. A session runs one chunk at a time, so two
  concurrent chunks of a run on a multi-slot worker get two sessions.
* One *zygote* per interpreter (pytest and its built-in plugins imported,
  nothing else: no installed plugin, see ``session_child._preload``) is kept
  ready and replaced in the background as soon as one is used: a new session
  pays only for collection. Variables read when the interpreter or the
  dynamic loader starts (``PYTHON*``, ``LD_*``, ``DYLD_*``) cannot be changed
  in a running process, so a task that sets them gets a cold child started
  with its environment instead.
* A chunk held to declared resources (``requirements.resources``) runs in a
  session of its own, started cold with its attempt's limits applied between
  fork and exec (``Activation.preexec``: rlimits, pinned cores, the attempt's
  memory cgroup), so the limits bind the process running its tests and
  everything they start; it is ended with the chunk, never reused (its
  cgroup and cores belong to that attempt). Such a run pays a session start
  and collection per chunk.
* Idle sessions close after ``idle_seconds`` (read from an injected clock, so
  :meth:`SessionPool.evict_idle` is testable without sleeping) and beyond
  ``max_idle`` (least recently used first): each holds a collected project in
  memory.
* An activated session is recorded with :func:`leftovers.remember`, so a
  worker killed outright has its groups ended by its successor. Zygotes and
  idle sessions need no record: they wait on their control pipe, whose end
  (the worker's death) makes them exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testfleet.domain.credential_env import without_credentials
from testfleet.domain.enums import ErrorClass
from testfleet.worker.executors.leftovers import forget, remember
from testfleet.worker.executors.process_group import end_group, signal_group
from testfleet.worker.pytest_sessions import pipe_protocol as wire
from testfleet.worker.pytest_sessions.session_process import (
    DEFAULT_KILL_GRACE_SECONDS,
    Collection,
    PytestSession,
    _EventReader,
    _OutputReader,
    _WritePipe,
    collect_errors,
)

log = logging.getLogger(__name__)

SESSION_CHILD_SCRIPT = Path(__file__).with_name("session_child.py")
#: A run's chunks (and its rerun rounds) follow each other within seconds; a
#: session idle for a minute belongs to a run that is over.
DEFAULT_IDLE_SECONDS = 60.0
DEFAULT_MAX_IDLE = 4
#: A used zygote is replaced once no session has been busy for this long: a
#: zygote's start (interpreter, pytest and its built-in plugins) costs a core for a
#: third of a second, which a running suite should not have to share.
DEFAULT_REPLENISH_QUIET_SECONDS = 1.0
_QUIET_POLL_SECONDS = 0.1
#: A zygote that has not imported pytest after this long is broken.
DEFAULT_START_TIMEOUT_SECONDS = 120.0
#: After a child exits, how long to wait for the last bytes of its pipes.
DEFAULT_OUTPUT_DRAIN_SECONDS = 2.0
#: Environment read at interpreter or loader start: a zygote cannot take it.
STARTUP_ENV_PREFIXES = ("PYTHON", "LD_", "DYLD_")
#: pytest's exit codes, for messages.
EXIT_CODE_NAMES = {
    0: "pytest stopped before running tests",
    1: "tests failed",
    2: "interrupted",
    3: "internal error",
    4: "usage error",
    5: "no tests collected",
}
#: Exit codes meaning the task's arguments, not the worker, are at fault.
USAGE_EXIT_CODES = frozenset({0, 4})


class SessionStartError(Exception):
    """A session could not be started or activated; ``message`` quotes pytest."""

    def __init__(self, error_class: ErrorClass, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message


@dataclass(frozen=True)
class SessionKey:
    """What must match for a chunk to run in an existing session."""

    run_id: str
    project: str
    python: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    #: Collect everything at activation (else each chunk's files, as needed).
    full_collection: bool = False
    #: The installed plugins the run's pytest loaded, as ``TestConfig.plugins``
    #: sends them (JSON text, so the key stays hashable); None: all installed.
    plugins: str | None = None
    #: Set for an attempt held to declared resources: its session is its own
    #: (started with the attempt's limits, never shared or reused), so the key
    #: matches no other attempt's.
    limited_attempt: int | None = None

    @property
    def needs_cold_start(self) -> bool:
        """Whether the task's env holds variables only a fresh interpreter reads."""
        return any(name.startswith(STARTUP_ENV_PREFIXES) for name, _ in self.env)


@dataclass(frozen=True)
class Activation:
    """What activating a session needs besides its key."""

    #: The session's whole environment (the attempt's, with the task's env on top).
    env: Mapping[str, str]
    #: The worker's work directory: session temp dirs and leftover records live there.
    work_dir: Path
    worker_id: str
    #: Run in the session's process between fork and exec (an attempt's
    #: ``AttemptLimits.preexec``: rlimits, cores, its cgroup). A session with
    #: one is started cold, never from the zygote, which runs unlimited.
    preexec: Callable[[], None] | None = None


class SessionPool:
    """Session children for one executor: zygotes, idle sessions, busy ones."""

    def __init__(
        self,
        *,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        max_idle: int = DEFAULT_MAX_IDLE,
        kill_grace_seconds: float = DEFAULT_KILL_GRACE_SECONDS,
        start_timeout_seconds: float = DEFAULT_START_TIMEOUT_SECONDS,
        output_drain_seconds: float = DEFAULT_OUTPUT_DRAIN_SECONDS,
        keep_zygotes: bool = True,
        replenish_quiet_seconds: float = DEFAULT_REPLENISH_QUIET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        child_script: Path = SESSION_CHILD_SCRIPT,
    ) -> None:
        """``keep_zygotes=False`` starts children only on demand (tests that count
        processes); ``clock`` is what idle time is measured with."""
        self._idle_seconds = idle_seconds
        self._max_idle = max_idle
        self._grace = kill_grace_seconds
        self._start_timeout = start_timeout_seconds
        self._drain = output_drain_seconds
        self._keep_zygotes = keep_zygotes
        self._clock = clock
        self._script = child_script
        self._zygotes: dict[str, asyncio.Task[PytestSession]] = {}
        self._idle: dict[SessionKey, list[PytestSession]] = {}
        self._live: set[PytestSession] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self._replenish_quiet = replenish_quiet_seconds
        #: Sessions acquired and not yet released or discarded.
        self._in_use = 0
        #: Interpreters whose zygote someone waits for: start it without delay.
        self._wanted: set[str] = set()

    @property
    def grace_seconds(self) -> float:
        return self._grace

    def idle_sessions(self) -> list[PytestSession]:
        return [session for sessions in self._idle.values() for session in sessions]

    def live_sessions(self) -> list[PytestSession]:
        return list(self._live)

    async def prewarm(self, python: str | None = None) -> None:
        """Start the zygote for ``python`` (the worker's own by default) in the background.

        Called by the worker CLI at start, so the first chunk pays no pytest import.
        """
        if self._closed:
            return
        python = python or sys.executable
        if python not in self._zygotes:
            self._zygotes[python] = asyncio.create_task(self._spawn(python))

    async def zygote(self, python: str | None = None) -> PytestSession | None:
        """The ready zygote for ``python``, waiting for one being started (tests)."""
        python = python or sys.executable
        task = self._zygotes.get(python)
        if task is None:
            return None
        self._wanted.add(python)  # someone waits: do not wait for quiet
        try:
            with contextlib.suppress(SessionStartError):
                return await asyncio.shield(task)
            return None
        finally:
            self._wanted.discard(python)

    async def acquire(self, key: SessionKey, activation: Activation) -> tuple[PytestSession, bool]:
        """A collected session for ``key``: an idle one (``True``: reused) or a newly
        activated one (``False``). Raises :class:`SessionStartError` when pytest cannot
        start or refuses the arguments."""
        if self._closed:
            raise SessionStartError(ErrorClass.INFRASTRUCTURE, "the worker is shutting down")
        idle = self._idle.get(key)
        while idle:
            session = idle.pop()  # the most recently used: its caches are the warmest
            if not idle:
                del self._idle[key]
            if session.alive:
                self._in_use += 1
                return session, True
            self._in_background(self._end(session, graceful=False))
        if key.needs_cold_start or activation.preexec is not None:
            session = await self._spawn(key.python, dict(activation.env), activation.preexec)
        else:
            session = await self._take_zygote(key.python)
        try:
            await self._activate(session, key, activation)
        except BaseException:
            session.kill_now()
            self._in_background(self._end(session, graceful=False))
            raise
        finally:
            # Replaced once this activation is done, not during it: on a small
            # machine the new zygote's start would slow the collection waited for.
            if not key.needs_cold_start and activation.preexec is None:
                self._replenish(key.python)
        self._in_use += 1
        return session, False

    def release(self, session: PytestSession) -> None:
        """The chunk finished: keep the session for the next chunk of its run (not
        an attempt's own limited session: that one ends with its attempt)."""
        self._in_use = max(0, self._in_use - 1)
        if (
            self._closed
            or not session.alive
            or session.key is None
            or session.key.limited_attempt is not None
        ):
            self._in_background(self._end(session, graceful=False))
            return
        session.idle_since = self._clock()
        self._idle.setdefault(session.key, []).append(session)
        idle = sorted(self.idle_sessions(), key=lambda s: s.idle_since)
        for oldest in idle[: max(0, len(idle) - self._max_idle)]:
            self._forget_idle(oldest)
            self._in_background(self._end(oldest, graceful=True))
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap())

    async def discard(self, session: PytestSession) -> None:
        """End a session that must not be reused (timed out, cancelled, crashed)."""
        self._in_use = max(0, self._in_use - 1)
        await self._end(session, graceful=False)

    async def evict_idle(self, now: float | None = None) -> int:
        """End the sessions idle for ``idle_seconds`` or more at ``now``; how many."""
        now = self._clock() if now is None else now
        expired = [s for s in self.idle_sessions() if now - s.idle_since >= self._idle_seconds]
        for session in expired:
            self._forget_idle(session)
        await asyncio.gather(*(self._end(session, graceful=True) for session in expired))
        return len(expired)

    async def close(self) -> None:
        """End every child this pool started (the worker is stopping)."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        zygotes = list(self._zygotes.values())
        self._zygotes.clear()
        for task in zygotes:
            task.cancel()
        await asyncio.gather(*zygotes, return_exceptions=True)
        self._idle.clear()
        await asyncio.gather(
            *(self._end(session, graceful=False) for session in list(self._live)),
            return_exceptions=True,
        )
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        if self._reaper is not None:
            await asyncio.gather(self._reaper, return_exceptions=True)

    # -- internals ------------------------------------------------------------

    def _forget_idle(self, session: PytestSession) -> None:
        if session.key is not None and session in self._idle.get(session.key, []):
            self._idle[session.key].remove(session)
            if not self._idle[session.key]:
                del self._idle[session.key]

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap(self) -> None:
        interval = max(1.0, self._idle_seconds / 4)
        while self._idle:
            await asyncio.sleep(interval)
            await self.evict_idle()

    def _replenish(self, python: str) -> None:
        if self._keep_zygotes and not self._closed and python not in self._zygotes:
            self._zygotes[python] = asyncio.create_task(self._spawn_when_quiet(python))

    async def _spawn_when_quiet(self, python: str) -> PytestSession:
        """Start a replacement zygote once the worker's sessions have been idle a
        while (or at once when a session needs it): see DEFAULT_REPLENISH_QUIET_SECONDS."""
        quiet_since: float | None = None
        while python not in self._wanted and not self._closed:
            if self._in_use:
                quiet_since = None
            else:
                now = self._clock()
                quiet_since = now if quiet_since is None else quiet_since
                if now - quiet_since >= self._replenish_quiet:
                    break
            await asyncio.sleep(_QUIET_POLL_SECONDS)
        return await self._spawn(python)

    async def _take_zygote(self, python: str) -> PytestSession:
        self._wanted.add(python)
        try:
            return await self._take_zygote_now(python)
        finally:
            self._wanted.discard(python)

    async def _take_zygote_now(self, python: str) -> PytestSession:
        for _ in range(2):  # a zygote found dead (OOM-killed while waiting) is replaced once
            task = self._zygotes.pop(python, None)
            session = await (task if task is not None else self._spawn(python))
            if session.alive:
                return session
            await self._end(session, graceful=False)
        raise SessionStartError(
            ErrorClass.INFRASTRUCTURE, f"pytest sessions with {python} die while waiting"
        )

    async def _spawn(
        self,
        python: str,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> PytestSession:
        """Start a child (``preexec`` run in it before exec) and wait for it to have
        imported pytest."""
        loop = asyncio.get_running_loop()
        control_read, control_write = os.pipe()
        report_read, report_write = os.pipe()
        output_read, output_write = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                python,
                "-u",  # unbuffered: a crash loses none of its last output
                str(self._script),
                "--control-fd",
                str(control_read),
                "--report-fd",
                str(report_write),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output_write,
                stderr=output_write,
                pass_fds=(control_read, report_write),
                cwd=tempfile.gettempdir(),  # activation moves it to the project
                # A warm session starts before any attempt: it gets the worker's
                # environment, never its credentials (activation replaces it).
                env=without_credentials(os.environ) if env is None else env,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except (OSError, ValueError) as exc:
            for fd in (control_write, report_read, output_read):
                os.close(fd)
            error_class = (
                ErrorClass.INVALID_CONFIG
                if isinstance(exc, FileNotFoundError | PermissionError)
                else ErrorClass.INFRASTRUCTURE
            )
            raise SessionStartError(error_class, f"cannot start {python}: {exc}") from exc
        finally:
            # The child holds its copies; ours must close or the pipes never reach EOF.
            for fd in (control_read, report_write, output_write):
                os.close(fd)
        events, output = _EventReader(), _OutputReader()
        pipes = [
            os.fdopen(control_write, "wb", 0),
            os.fdopen(report_read, "rb", 0),
            os.fdopen(output_read, "rb", 0),
        ]
        try:
            control, _ = await loop.connect_write_pipe(_WritePipe, pipes[0])
            events_transport, _ = await loop.connect_read_pipe(lambda: events, pipes[1])
            output_transport, _ = await loop.connect_read_pipe(lambda: output, pipes[2])
        except BaseException:
            # Cancelled (or out of file descriptors) between start and supervision.
            signal_group(process.pid, signal.SIGKILL)
            for pipe in pipes:
                pipe.close()
            await asyncio.shield(process.wait())
            raise
        session = PytestSession(
            process,
            control,
            events,
            events_transport,
            output,
            output_transport,
            python=python,
            drain_seconds=self._drain,
        )
        self._live.add(session)
        try:
            ready = await asyncio.wait_for(session.next_event(), self._start_timeout)
        except BaseException as exc:
            session.kill_now()
            self._in_background(self._end(session, graceful=False))
            if isinstance(exc, TimeoutError):
                raise SessionStartError(
                    ErrorClass.INFRASTRUCTURE,
                    f"{python} did not import pytest within {self._start_timeout:g} s",
                ) from exc
            raise
        if not isinstance(ready, wire.Ready):
            death = await session.death(self._grace) if ready is None else ""
            await self._end(session, graceful=False)
            said = _said(ready)
            output_text = session.output_text()
            details = "\n".join(part for part in (said, output_text) if part)
            raise SessionStartError(
                ErrorClass.INFRASTRUCTURE,
                f"cannot start a pytest session with {python}"
                + (f" ({death})" if death else "")
                + (f":\n{details}" if details else ""),
            )
        session.pytest_version = ready.pytest_version
        return session

    async def _activate(self, session: PytestSession, key: SessionKey, how: Activation) -> None:
        """Collect ``key``'s project in ``session``; raise with pytest's words if it refuses."""
        session.key = key
        session.temp_dir = how.work_dir / "pytest-sessions" / f"{os.getpid()}-{-session.record_id}"
        try:
            await asyncio.to_thread(session.temp_dir.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise SessionStartError(
                ErrorClass.INFRASTRUCTURE, f"cannot create {session.temp_dir}: {exc}"
            ) from exc
        remember(how.work_dir, session.record_id, session.pid)
        session.leftovers_dir = how.work_dir
        session.send(
            wire.Activate(
                cwd=key.project,
                args=list(key.args),
                env=dict(how.env),
                basetemp=str(session.temp_dir / "basetemp"),
                cache_dir=str(session.temp_dir / "cache"),
                worker=how.worker_id,
                full_collection=key.full_collection,
                plugins=None if key.plugins is None else json.loads(key.plugins),
            )
        )
        event = await session.next_event()
        if isinstance(event, wire.Collected):
            session.collection = Collection(
                count=event.count,
                errors=collect_errors(event.errors),
                seconds=max(0.0, event.seconds),
                python=event.python or key.python,
                pytest_version=event.pytest_version or session.pytest_version,
            )
            return
        death = await session.death(self._grace)
        output_text = session.output_text()
        await self._end(session, graceful=False)
        if isinstance(event, wire.SessionEnd):
            code = event.exit_code
            what = EXIT_CODE_NAMES.get(code, "unexpected exit")
            error_class = (
                ErrorClass.INVALID_CONFIG if code in USAGE_EXIT_CODES else ErrorClass.INFRASTRUCTURE
            )
            raise SessionStartError(
                error_class,
                f"pytest did not start a session in {key.project} with args {list(key.args)} "
                f"(exit code {code}: {what})" + (f":\n{output_text}" if output_text else ""),
            )
        said = _said(event)
        details = "\n".join(part for part in (said, output_text) if part)
        raise SessionStartError(
            ErrorClass.INFRASTRUCTURE,
            f"the pytest session died while collecting {key.project} ({death})"
            + (f":\n{details}" if details else ""),
        )

    async def _end(self, session: PytestSession, *, graceful: bool) -> None:
        """End a child and its group, close its pipes, drop its records and temp dir."""
        if session.ended:
            return
        session.ended = True
        self._forget_idle(session)
        try:
            if graceful and session.process.returncode is None:
                # "exit" lets pytest finish its session (plugins write their files).
                session.send(wire.Exit())
                session.close_control()
                await session.wait_exit(self._grace)
            # After an exit this only finds what its tests left running.
            await end_group(session.pid, self._grace)
            await session.wait_exit(self._grace + 5)
        finally:
            session.close_pipes()
            self._live.discard(session)
            if session.leftovers_dir is not None:
                forget(session.leftovers_dir, session.record_id)
            if session.temp_dir is not None:
                await asyncio.to_thread(shutil.rmtree, session.temp_dir, True)


def _said(event: wire.Event | None) -> str:
    """What an unexpected event says, for a start-up error message."""
    if event is None:
        return ""
    if isinstance(event, wire.Fatal | wire.Error):
        return event.message
    return repr(event)
