"""The ``test`` executor: run a chunk of pytest node ids in a warm session, report each test.

Callers: the worker agent, for tasks of type ``test`` (config:
``domain.pytest_tasks.TestConfig``);
:func:`~testfleet.worker.executors.registry.default_executors` includes it where
pytest is installed. The worker CLI calls :meth:`PytestExecutor.prewarm` at
start and :meth:`PytestExecutor.close` at exit.

How an attempt runs:

* The config is validated; the project directory (``project.path``, or a
  cached checkout of ``project.repo`` at ``project.commit``) and the
  interpreter (``python``, the worker's own by default) must exist here,
  else the attempt fails as ``invalid_config`` without starting anything.
* Node ids that earlier attempts reported (``context.completed_tests``) are
  listed as ``already_reported`` and not run again.
* The rest run in a session from :class:`~testfleet.worker.pytest_sessions.sessions.SessionPool`:
  an idle one already collected for this run, or a warm zygote activated for
  it. Each finished test's :class:`TestRecord` goes to ``context.report_tests``
  as it arrives, and again in the result.
* Failing tests are data: the attempt completes when every node id has a
  record, whatever the tests' outcomes.
* The session process dying mid-chunk (``os._exit``, a segfault, the OOM
  killer) gives the test it was running a ``crashed`` record; the remaining
  node ids continue in another session, up to ``max_restarts`` times.
* A chunk with declared resources (``requirements.resources``) runs in a
  session of its own started with its attempt's limits (rlimits, cores, its
  memory cgroup), ended with the chunk; tests that ran into the limits make
  the attempt fail ``out_of_memory``/``resource_limit`` once the rest ran
  (``pytest_limits.py``).
* ``task.timeout_seconds`` and ``context.cancel_event`` end the session's
  whole process group (it is never reused); node ids without a record are
  listed as ``not_run``.
* A test that stops its session (``pytest.exit()``) ends the attempt as it
  ends a serial run: its record says so, the chunk's later node ids are
  ``not_run`` and the attempt fails as a task failure (not retried).
* The result lists every record again (the coordinator keeps the first copy
  of each test it sees, streamed or listed). Past
  :data:`RESULT_RECORDS_BUDGET` bytes the biggest listed copies are slimmed
  to outcomes, times and crash lines, so the result still fits in a frame;
  the streamed copies are whole, and are the ones stored unless the stream
  was lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from testfleet.domain.enums import ErrorClass, ResultStatus, TaskType
from testfleet.domain.pytest_limits import MAX_LONGREPR_CHARS
from testfleet.domain.pytest_tasks import (
    PhaseReport,
    ReportOutcome,
    SessionInfo,
    TestChunkOutcome,
    TestConfig,
    TestPhase,
    TestRecord,
)
from testfleet.domain.result import TaskResult, encode_logs
from testfleet.domain.session_env import WORKER_SESSION_ENV
from testfleet.domain.task import TaskSpec
from testfleet.worker.executors.base import (
    ExecutionContext,
    ExecutorBase,
    Failure,
    ResultBuilder,
    attempt_environment,
)
from testfleet.worker.executors.process_group import OutputTail
from testfleet.worker.executors.pytest_limits import LimitFailures
from testfleet.worker.executors.resource_limits import begin_limits
from testfleet.worker.pytest_sessions import report_data
from testfleet.worker.pytest_sessions.session_process import ChunkEnd, PytestSession
from testfleet.worker.pytest_sessions.sessions import (
    Activation,
    SessionKey,
    SessionPool,
    SessionStartError,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_RESTARTS = 3
DEFAULT_LOG_TAIL_BYTES = 256 * 1024
#: Variables of the attempt (task and attempt ids, worker) set per chunk, not per session.
ATTEMPT_ENV_PREFIX = "TESTFLEET_"
#: Bytes of JSON a result's records may take before the biggest are slimmed:
#: half a frame (protocol.codec.MAX_FRAME_BYTES is 64 MiB), the rest for the
#: result's other fields and other results batched with it.
RESULT_RECORDS_BUDGET = 32 * 1024 * 1024


class _Ending(StrEnum):
    FINISHED = "finished"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


@dataclass
class _Attempt:
    """What one attempt has gathered so far; shared by the runner and the supervisor."""

    to_run: list[str]
    logs: OutputTail
    records: dict[str, TestRecord] = field(default_factory=dict)
    wanted: frozenset[str] = field(init=False)
    sessions: int = 0
    reused: bool = False
    collect_seconds: float = 0.0
    collected: int = 0
    python: str = ""
    pytest_version: str = ""
    restarts: int = 0

    def __post_init__(self) -> None:
        self.wanted = frozenset(self.to_run)

    def remaining(self) -> list[str]:
        return [nodeid for nodeid in self.to_run if nodeid not in self.records]

    def accept(self, records: list[TestRecord]) -> list[TestRecord]:
        """Keep the first record of each node id this attempt runs; the new ones."""
        fresh: list[TestRecord] = []
        for record in records:
            if record.nodeid in self.wanted and record.nodeid not in self.records:
                self.records[record.nodeid] = record
                fresh.append(record)
        return fresh

    def joined(self, session: PytestSession, reused: bool) -> None:
        """Note a session this attempt runs in (the first decides ``reused``)."""
        if self.sessions == 0:
            self.reused = reused
        self.sessions += 1
        collection = session.collection
        if collection is not None:
            if not reused:
                self.collect_seconds += collection.seconds
            self.collected = collection.count
            self.python = collection.python
            self.pytest_version = collection.pytest_version

    def collected_in(self, session: PytestSession) -> None:
        """After a chunk: what a lazy session collected for it counts too."""
        self.collect_seconds += session.chunk_collect_seconds
        if session.collection is not None:
            self.collected = session.collection.count


def _unique(node_ids: list[str]) -> list[str]:
    return list(dict.fromkeys(node_ids))


def resolve_python(configured: str | None) -> str | None:
    """The interpreter's path (a name is looked up on PATH); None when there is none.

    Symlinks are kept: a virtual environment's ``python`` is one, and resolving
    it would lose the environment.
    """
    if configured is None:
        return sys.executable
    found = shutil.which(configured)
    return str(Path(found).absolute()) if found else None


def _local_project(configured: str, worker_id: str) -> tuple[Path | None, Failure | None]:
    """``project.path`` as a directory of this worker, or why not (a quick stat)."""
    path = Path(configured)
    if path.is_dir():
        return path.absolute(), None
    what = "is not a directory" if path.exists() else "does not exist"
    return None, (
        ErrorClass.INVALID_CONFIG,
        f"project.path '{configured}' {what} on worker {worker_id}",
    )


def crash_record(end: ChunkEnd, worker_id: str, cause: str | None = None) -> TestRecord | None:
    """The record of the test a dying session was running (None if it ran none).

    Its phases are those pytest reported, then a failed one for the phase it
    was in, whose text says the process died, how, and its last output.
    """
    running = end.running
    if running is None:
        return None
    phases = list(running.phases)
    if not phases:
        when = TestPhase.SETUP
    elif phases[-1].when is TestPhase.SETUP and phases[-1].outcome is ReportOutcome.PASSED:
        when = TestPhase.CALL
    else:
        when = TestPhase.TEARDOWN
        if phases[-1].when is TestPhase.TEARDOWN:
            phases.pop()
    why = end.death if cause is None else f"{end.death}; {cause}"
    text = f"the pytest process on worker {worker_id} died while running this test ({why})"
    if end.output:
        text += f"\n\nits last output:\n{end.output}"
    now = time.time()
    start = phases[-1].stop if phases else now
    phases.append(
        PhaseReport(
            when=when,
            outcome=ReportOutcome.FAILED,
            duration=max(0.0, now - start) if start else 0.0,
            start=start,
            stop=now,
            longrepr=text[-MAX_LONGREPR_CHARS:],
        )
    )
    return TestRecord(
        nodeid=running.nodeid,
        location=running.location,
        keywords=running.keywords,
        phases=phases,
        crashed=True,
    )


def within_budget(records: list[TestRecord], budget: int) -> list[TestRecord]:
    """``records`` for a result, the biggest slimmed until their JSON fits ``budget``.

    A slimmed copy keeps every report's outcome, phase, times, subtest
    description and crash line (what counts, exit codes and the short
    summary need), without captured output, properties or plugin extras.
    """
    sizes = [len(record.model_dump_json()) for record in records]
    total = sum(sizes)
    if total <= budget:
        return records
    slimmed = list(records)
    for index in sorted(range(len(records)), key=sizes.__getitem__, reverse=True):
        lean = slim(records[index])
        total -= sizes[index] - len(lean.model_dump_json())
        slimmed[index] = lean
        if total <= budget:
            break
    else:
        log.warning("a chunk's %d records are %d bytes even slimmed", len(records), total)
    return slimmed


def slim(record: TestRecord) -> TestRecord:
    """``record`` with each report reduced as a lean subtest report is."""
    data = record.model_dump(mode="json")
    data["phases"] = [report_data.lean(phase) for phase in data["phases"]]
    return TestRecord.model_validate(data)


async def _race(
    runner: asyncio.Task[Failure | None], cancel_event: asyncio.Event, seconds: float
) -> _Ending:
    """Wait for the runner to finish, the attempt to be cancelled, or ``seconds`` to pass."""
    cancelled = asyncio.ensure_future(cancel_event.wait())
    try:
        done, _ = await asyncio.wait(
            {runner, cancelled}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        cancelled.cancel()
    # A runner that finished in the same instant counts: the work did finish.
    if runner in done:
        return _Ending.FINISHED
    return _Ending.CANCELLED if cancelled in done else _Ending.TIMED_OUT


class PytestExecutor(ExecutorBase):
    """Runs ``TestConfig`` chunks in warm pytest sessions; reports a ``TestChunkOutcome``."""

    task_type: TaskType = TaskType.TEST

    def __init__(
        self,
        *,
        pool: SessionPool | None = None,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        log_tail_bytes: int = DEFAULT_LOG_TAIL_BYTES,
    ) -> None:
        """``pool`` replaces the default session pool (tests pass one with a fake
        clock or short grace periods); ``max_restarts`` caps how often one attempt
        starts another session after the previous one died."""
        self._pool = pool if pool is not None else SessionPool()
        self._max_restarts = max_restarts
        self._log_tail = log_tail_bytes

    @property
    def pool(self) -> SessionPool:
        return self._pool

    async def prewarm(self) -> None:
        """Start a zygote for the worker's own interpreter (the worker CLI, at start)."""
        await self._pool.prewarm()

    async def close(self) -> None:
        """End every session and zygote (the worker CLI, at exit)."""
        await self._pool.close()

    async def run(self, task: TaskSpec, context: ExecutionContext) -> TaskResult:
        out = ResultBuilder(task, context, is_simulated=False)
        config = out.parse_config(TestConfig, prefix="invalid test config: ")
        if isinstance(config, TaskResult):
            return config
        already = _unique([n for n in config.node_ids if n in context.completed_tests])
        to_run = _unique([n for n in config.node_ids if n not in context.completed_tests])
        attempt = _Attempt(to_run=to_run, logs=OutputTail(self._log_tail, context.report_output))
        if not to_run and config.node_ids:
            # Every test was reported by an earlier attempt: nothing to start.
            return self._result(out, config, attempt, already, None)
        python = resolve_python(config.python)
        if python is None:
            return out.failed(
                (
                    ErrorClass.INVALID_CONFIG,
                    f"python interpreter '{config.python}' not found on worker {context.worker_id}",
                )
            )
        if context.cancel_event.is_set():
            cancelled = (ErrorClass.CANCELLED, "cancelled before the tests started")
            return self._result(out, config, attempt, already, cancelled)

        runner = asyncio.create_task(self._run_all(task, context, config, python, attempt))
        try:
            ending = await _race(runner, context.cancel_event, out.remaining())
        except asyncio.CancelledError:
            # The agent itself is going away: the runner ends its session first.
            runner.cancel()
            await asyncio.wait({runner})
            raise
        error: Failure | None
        if ending is _Ending.FINISHED:
            try:
                error = runner.result()
            except Exception as exc:  # a bug here, not the task's fault
                log.exception("running pytest node ids failed")
                error = (ErrorClass.INFRASTRUCTURE, f"running the tests failed: {exc!r}")
        else:
            runner.cancel()
            await asyncio.wait({runner})
            left = len(attempt.remaining())
            what = f"{left} of {len(to_run)} tests not run"
            if ending is _Ending.TIMED_OUT:
                error = (
                    ErrorClass.TIMEOUT,
                    f"timed out after {task.timeout_seconds:g} s; the pytest session's "
                    f"process group was ended; {what}",
                )
            else:
                error = (
                    ErrorClass.CANCELLED,
                    f"cancelled; the pytest session's process group was ended; {what}",
                )
        return self._result(out, config, attempt, already, error)

    def _result(
        self,
        out: ResultBuilder,
        config: TestConfig,
        attempt: _Attempt,
        already: list[str],
        error: Failure | None,
    ) -> TaskResult:
        status = ResultStatus.COMPLETED
        if error is not None:
            status = {
                ErrorClass.TIMEOUT: ResultStatus.TIMED_OUT,
                ErrorClass.CANCELLED: ResultStatus.CANCELLED,
            }.get(error[0], ResultStatus.FAILED)
        outcome = TestChunkOutcome(
            run_id=config.run_id,
            rerun=config.rerun,
            tests=within_budget(list(attempt.records.values()), RESULT_RECORDS_BUDGET),
            already_reported=already,
            not_run=attempt.remaining(),
            session=SessionInfo(
                python=attempt.python,
                pytest_version=attempt.pytest_version,
                reused=attempt.reused,
                collect_seconds=attempt.collect_seconds,
                collected=attempt.collected,
                restarts=attempt.restarts,
            ),
        )
        return out.finish(
            status,
            error,
            results=outcome.model_dump(mode="json"),
            logs=encode_logs(attempt.logs.tail()),
        )

    async def _project_dir(
        self, config: TestConfig, context: ExecutionContext
    ) -> tuple[Path | None, Failure | None]:
        source = config.project
        if source.path is not None:
            return _local_project(source.path, context.worker_id)
        # Imported here: only tasks naming a repository need the checkout cache.
        from testfleet.repo_cache import CheckoutError, ensure_checkout

        # ProjectSource's validator guarantees both when there is no path.
        assert source.repo is not None
        assert source.commit is not None
        try:
            checkout = await asyncio.to_thread(
                ensure_checkout, source.repo, source.commit, context.work_dir / "repos"
            )
        except CheckoutError as exc:
            return None, (ErrorClass.INVALID_CONFIG, str(exc))
        return checkout, None

    async def _run_all(
        self,
        task: TaskSpec,
        context: ExecutionContext,
        config: TestConfig,
        python: str,
        attempt: _Attempt,
    ) -> Failure | None:
        """Run every node id of the attempt, in as many sessions as crashes need.

        Returns the attempt's error (None: every node id has a record). Cancelled
        by :meth:`run` on timeout or cancel: it then ends the session it was using.
        """
        project, problem = await self._project_dir(config, context)
        if problem is not None or project is None:
            return problem
        limits, problem = begin_limits(
            context.limiter,
            context.attempt_id,
            task.requirements.resources,
            context.work_dir,
            track=False,
        )
        if problem is not None:
            return problem
        if limits is None:
            return await self._run_chunks(task, context, config, python, attempt, project, None)
        if not config.node_ids:
            # A warm-up of a limited run: its chunks each start their own session.
            limits.close()
            return None
        try:
            return await self._run_chunks(
                task, context, config, python, attempt, project, LimitFailures(limits)
            )
        finally:
            limits.close()  # after its sessions ended: the cgroup must be empty

    async def _run_chunks(
        self,
        task: TaskSpec,
        context: ExecutionContext,
        config: TestConfig,
        python: str,
        attempt: _Attempt,
        project: Path,
        limited: LimitFailures | None,
    ) -> Failure | None:
        """:meth:`_run_all` once the project and the limits are known; ``limited``:
        the attempt's limits, which its sessions are started with."""
        env = attempt_environment(task, context, {**config.env, WORKER_SESSION_ENV: "1"})
        key = SessionKey(
            run_id=config.run_id,
            project=str(project),
            python=python,
            args=tuple(config.args),
            env=tuple(sorted(config.env.items())),
            full_collection=config.full_collection,
            plugins=None
            if config.plugins is None
            else json.dumps([plugin.model_dump(mode="json") for plugin in config.plugins]),
            limited_attempt=None if limited is None else context.attempt_id,
        )
        activation = Activation(
            env=env,
            work_dir=context.work_dir,
            worker_id=context.worker_id,
            preexec=None if limited is None else limited.limits.preexec,
        )
        if not config.node_ids:
            # A warm-up: activate the run's session and leave it idle for the
            # run's chunks (see TestConfig.node_ids).
            try:
                session, reused = await self._pool.acquire(key, activation)
            except SessionStartError as exc:
                return exc.error_class, f"worker {context.worker_id}: {exc.message}"
            attempt.joined(session, reused)
            self._pool.release(session)
            return None
        # Per chunk: the same session serves later attempts and tasks of the run.
        per_chunk = {k: v for k, v in env.items() if k.startswith(ATTEMPT_ENV_PREFIX)}
        while remaining := attempt.remaining():
            try:
                session, reused = await self._pool.acquire(key, activation)
            except SessionStartError as exc:
                return exc.error_class, f"worker {context.worker_id}: {exc.message}"
            attempt.joined(session, reused)
            session.output_sink = attempt.logs
            try:
                end = await session.run_chunk(
                    remaining,
                    per_chunk,
                    lambda records: self._report(context, attempt, records),
                    grace_seconds=self._pool.grace_seconds,
                )
            except BaseException:
                # Timed out or cancelled (run() cancels us), or a bug: never reuse it.
                session.output_sink = None
                await self._pool.discard(session)
                raise
            session.output_sink = None
            attempt.collected_in(session)
            if end.interrupted:
                await self._pool.discard(session)
                return _interrupted(attempt, context.worker_id)
            if end.finished:
                self._pool.release(session)
                missing = attempt.remaining()
                if missing:  # the session skipped some: a bug there, not the tests' fault
                    return (
                        ErrorClass.INFRASTRUCTURE,
                        f"the pytest session on worker {context.worker_id} reported no "
                        f"result for {len(missing)} tests",
                    )
                continue
            await self._pool.discard(session)
            cause = None
            if limited is not None:
                cause = limited.session_died(session.process.returncode, end.output)
            record = crash_record(end, context.worker_id, None if cause is None else cause[1])
            if record is not None:
                self._report(context, attempt, [record])
                if limited is not None and cause is not None:
                    limited.note(record.nodeid, cause)
            if not attempt.remaining():
                break
            if attempt.restarts >= self._max_restarts:
                return (
                    ErrorClass.INFRASTRUCTURE,
                    f"the pytest process on worker {context.worker_id} died "
                    f"{attempt.restarts + 1} times (last: {end.death}); "
                    f"{len(attempt.remaining())} tests not run",
                )
            attempt.restarts += 1
        if limited is not None:
            limited.judge(list(attempt.records.values()))
            return limited.error(context.worker_id)
        return None

    @staticmethod
    def _report(context: ExecutionContext, attempt: _Attempt, records: list[TestRecord]) -> None:
        fresh = attempt.accept(records)
        if fresh and context.report_tests is not None:
            try:
                context.report_tests(fresh)
            except Exception:  # a listener's bug must not lose the result
                log.exception("report_tests failed")


def _interrupted(attempt: _Attempt, worker_id: str) -> Failure:
    """The attempt's error after a test stopped its session."""
    stopper = next((r for r in attempt.records.values() if r.interrupted is not None), None)
    what = "a test" if stopper is None else stopper.nodeid
    how = ""
    if stopper is not None and stopper.interrupted is not None:
        how = f" ({stopper.interrupted.kind.value}: {stopper.interrupted.message})"
    return (
        ErrorClass.TASK_FAILURE,
        f"{what} stopped the pytest session on worker {worker_id}{how}, as pytest.exit() "
        f"stops a serial run; {len(attempt.remaining())} later tests of the chunk not run",
    )
