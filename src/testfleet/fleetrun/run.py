"""One pytest run across the fleet: split, submit, follow, rerun failures.

Callers: the ``pytest --fleet`` plugin (:mod:`testfleet.fleetrun.plugin`),
which ``testfleet run`` starts in-process. The plugin collects the suite
locally and hands :class:`FleetRun` the collected tests; :class:`FleetRun`
hands every finished test back through ``report`` as a
:class:`~testfleet.domain.pytest_tasks.TestRecord`, which the plugin feeds to
pytest's own reporting. Nothing here imports pytest, so unit tests drive it
with a fake coordinator and a fake clock. The values it is handed and hands
back (settings, collected tests, progress, outcome) are in
:mod:`testfleet.fleetrun.run_types`.

How a run goes:

1. The connected workers that take ``test`` tasks are counted (their slots);
   per-test durations from earlier runs of the same project come from the
   coordinator (DuckDB), and :func:`~testfleet.fleetrun.split.split_suite`
   cuts the suite into more chunks than slots, longest first.
2. Each chunk is one ``type: test`` task, all submitted at once. Task ids are
   ``<run_id>.r<rerun>.<index>``, zero-padded, so the queue (same priority,
   same age, then task id) hands them out in split order as slots free up.
3. The run is polled: new test rows by ``seq`` (each test exactly once, even
   when a lost worker's chunk was finished by another attempt) and the chunk
   tasks' statuses. A chunk that ends without reporting some of its tests
   (its worker could not run it, it timed out, or no worker can ever take
   it) has those tests reported as errors that say why.
4. ``rerun_failures``: a failed or errored test is held back, and rerun up to
   N times, each time excluding the workers it failed on while another
   worker is available. One that then passes is reported as passed and listed
   as flaky (its rows in ``test_results`` keep both outcomes); one that never
   passes is reported with its last failure.
5. A test that stops its session (``pytest.exit()`` in a test) stops the run
   as it stops a serial one: the tests before it in collection order are
   still waited for and reported, none after it is (chunks holding only later
   tests are cancelled, later records dropped), there are no reruns, and the
   plugin ends the local session with the same exit.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from testfleet.client import FleetError
from testfleet.domain.enums import TaskStatus
from testfleet.domain.pytest_tasks import (
    PhaseReport,
    ReportOutcome,
    TestLocation,
    TestPhase,
    TestRecord,
)
from testfleet.fleetrun.chunk_tasks import chunk_document
from testfleet.fleetrun.prestart import Prestarted, reconcile
from testfleet.fleetrun.run_types import (
    CollectedTest,
    FlakyTest,
    FleetRunError,
    RunClient,
    RunOutcome,
    RunProgress,
    RunSettings,
)
from testfleet.fleetrun.split import Chunk, SuiteTest, split_suite
from testfleet.fleetrun.warm_up import TRANSIENT_STATUSES, warm_up, workers_taking_tests

#: Tasks per submit request (the coordinator's default limit is higher).
SUBMIT_BATCH = 1000
#: How long a run rides out a coordinator it cannot reach, or that answers
#: 502-504 (restarting, stopped, its disk full), before giving up: an
#: operator's restart of the coordinator must not end a run (found by the
#: chaos suite, tests/chaos).
OUTAGE_SECONDS = 300.0
#: How often a run waiting for its first worker asks the coordinator again.
WORKER_POLL_SECONDS = 0.5
#: A resubmission refused with this code was committed by an earlier try.
DUPLICATE_CODE = "duplicate_task_id"

T = TypeVar("T")

__all__ = ["FleetRun", "cancel_all", "hardware_of", "new_run_id", "warm_up"]


def _is_final(status: str | None) -> bool:
    """Whether a chunk's task status (as the API shows it; None if not seen yet) is final."""
    return status is not None and TaskStatus(status).is_terminal


def cancel_all(client: RunClient, task_ids: Iterable[str]) -> None:
    """Cancel tasks in one request, ignoring those already finished (and a
    coordinator gone). One request is one step on the coordinator: a slot freed
    by cancelling one running chunk never starts another chunk being cancelled."""
    ids = list(task_ids)
    if ids:
        with contextlib.suppress(Exception):
            client.cancel_many(ids)


def new_run_id() -> str:
    """A readable, unique run id: ``run-20261129-010203-a1b2c3``."""
    return time.strftime("run-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


@dataclass
class _Held:
    """A failed test waiting for its rerun."""

    record: TestRecord
    failed_on: list[str]
    first_failure: str


@dataclass
class _PassState:
    """One pass (the first run, or one rerun round) while it is followed."""

    rerun: int
    task_ids: list[str]
    #: Each task's tests the run expects from it (a prestarted chunk: only
    #: those still collected); rows for any other node id are not reported.
    node_ids_of: dict[str, list[str]]
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)
    unschedulable_since: dict[str, float] = field(default_factory=dict)
    given_up: dict[str, str] = field(default_factory=dict)
    #: Chunks cancelled because a test before all of theirs stopped the run.
    cancelled: set[str] = field(default_factory=set)
    _expected: dict[str, frozenset[str]] = field(default_factory=dict)

    def expected(self, task_id: str) -> frozenset[str]:
        """The node ids the run takes from ``task_id``'s rows (none if not this pass's)."""
        found = self._expected.get(task_id)
        if found is None:
            found = self._expected[task_id] = frozenset(self.node_ids_of.get(task_id, ()))
        return found


class FleetRun:
    """Runs one collected suite on the fleet; see the module docstring."""

    def __init__(
        self,
        client: RunClient,
        settings: RunSettings,
        *,
        report: Callable[[TestRecord, str], None],
        progress: Callable[[RunProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        reached: bool = False,
        say: Callable[[str], None] | None = None,
    ) -> None:
        """``say`` shows one line to the user (the session's terminal): used while
        the run waits for a worker."""
        self.client = client
        self._say = say or (lambda _line: None)
        #: Whether the coordinator has answered this run (``reached``: its warm-up
        #: did). Until it has, an unreachable one fails at once: a wrong address
        #: or a coordinator that is down must not look like a hang.
        self._reached = reached
        self.settings = settings
        self._report = report
        self._progress = progress
        self._should_stop = should_stop or (lambda: False)
        self._clock = clock
        self._sleep = sleep
        self.outcome = RunOutcome(run_id=settings.run_id)
        self._tests: dict[str, CollectedTest] = {}
        self._held: dict[str, _Held] = {}
        self._failed_before: dict[str, _Held] = {}
        self._done = 0
        self._failures = 0
        self._last_seq = 0
        self._last_progress = float("-inf")
        #: Workers that could take chunks when the run started (reruns avoid some).
        self._eligible_workers: list[str] = []
        #: Collection order; after an interruption, tests past ``_stop_at`` are dropped.
        self._position: dict[str, int] = {}
        self._stop_at: int | None = None

    # ----------------------------------------------------------------- the run

    def run(
        self, tests: Sequence[CollectedTest], prestarted: Prestarted | None = None
    ) -> RunOutcome:
        """Run ``tests`` to the end; every one is reported exactly once.

        ``prestarted``: chunks submitted before collection from the stored test
        list (:mod:`testfleet.fleetrun.prestart`); they are reconciled with
        ``tests``, and only the tests they do not cover are split here."""
        self._tests = {t.nodeid: t for t in tests}
        self._position = {t.nodeid: index for index, t in enumerate(tests)}
        if not tests:
            if prestarted is not None:
                cancel_all(self.client, [task_id for task_id, _ in prestarted.chunks])
            return self.outcome
        expected: dict[str, list[str]] = {}
        if prestarted is None:
            slots = self._test_slots()
            history = self._through_outages(
                lambda: self.client.test_durations(self.settings.project.key())
            )
            to_split = list(tests)
        else:
            slots, history = prestarted.slots, prestarted.history
            self._eligible_workers = list(prestarted.workers)
            plan = reconcile(prestarted, tests)
            cancel_all(self.client, plan.empty)
            expected = {t: n for t, n in plan.expected.items() if t not in set(plan.empty)}
            to_split = plan.new
            self.outcome.prestarted = len(prestarted.chunks)
            self.outcome.dropped = len(plan.dropped)
            self.outcome.new_tests = len(plan.new)
        suite = [SuiteTest(t.nodeid, history.get(t.nodeid), t.hardware) for t in to_split]
        known = any(history.get(t.nodeid) for t in tests)
        self.outcome.split_by = "durations" if known else "count"
        chunks = split_suite(suite, workers=slots) if suite else []
        self._run_pass(0, [(chunk, ()) for chunk in chunks], prestarted=expected)
        for rerun in range(1, self.settings.rerun_failures + 1):
            if not self._held or self.outcome.stopped_early:
                break
            self._run_pass(rerun, self._rerun_chunks(slots))
        # Whatever is still held failed every time: report its last failure.
        for held in self._held.values():
            if not self._past_stop(held.record.nodeid):
                self._emit(held.record, held.failed_on[-1])
        self._held.clear()
        return self.outcome

    def _test_slots(self) -> int:
        workers = self._wait_for_workers()
        self._eligible_workers = sorted(str(w["worker_id"]) for w in workers)
        return sum(int(w.get("slots", 1)) for w in workers)

    def _wait_for_workers(self) -> list[dict[str, Any]]:
        """The workers that take test tasks, waiting up to ``wait_for_workers_seconds``
        for the first to connect: right after a coordinator restart, or on a fleet
        whose workers are still starting, none is connected yet, and a run that
        gave up at once would fail for nothing. Says once that it waits; raises
        :class:`FleetRunError` naming the option when the wait is over."""
        limit = self.settings.wait_for_workers_seconds
        started = self._clock()
        waiting = False
        while True:
            workers = workers_taking_tests(self._through_outages(self.client.workers))
            if workers:
                if waiting:
                    waited_for = self._clock() - started
                    self._say(f"{len(workers)} worker(s) ready after {waited_for:.1f} s")
                return workers
            if self._clock() - started >= limit:
                waited = f" after waiting {limit:g} s (--wait-for-workers)" if limit > 0 else ""
                raise FleetRunError(
                    f"no connected worker takes test tasks{waited}: start one on each machine "
                    "with `testfleet worker --coordinator URL` (workers need pytest installed)"
                )
            if not waiting:
                waiting = True
                self._say(
                    f"waiting up to {limit:g} s for a worker that takes test tasks "
                    "(none is connected yet; --wait-for-workers sets how long)"
                )
            self._sleep(WORKER_POLL_SECONDS)

    def _rerun_chunks(self, slots: int) -> list[tuple[Chunk, tuple[str, ...]]]:
        """Held failures as chunks, grouped by the workers they must avoid."""
        self.outcome.reruns += 1
        by_exclusion: dict[tuple[str, ...], list[str]] = {}
        others_exist = set(self._eligible_workers)
        for nodeid, held in sorted(self._held.items()):
            exclude = tuple(sorted(set(held.failed_on)))
            if not others_exist - set(exclude):
                exclude = ()  # every worker failed it: any may try again
            by_exclusion.setdefault(exclude, []).append(nodeid)
        self._failed_before.update(self._held)
        self._held = {}
        chunks: list[tuple[Chunk, tuple[str, ...]]] = []
        for exclude, node_ids in by_exclusion.items():
            suite = [
                SuiteTest(n, None, self._tests[n].hardware if n in self._tests else ())
                for n in node_ids
            ]
            chunks += [(chunk, exclude) for chunk in split_suite(suite, workers=slots)]
        return chunks

    # ---------------------------------------------------------------- one pass

    def _run_pass(
        self,
        rerun: int,
        chunks: list[tuple[Chunk, tuple[str, ...]]],
        prestarted: dict[str, list[str]] | None = None,
    ) -> None:
        """Submit ``chunks`` and follow them, with the ``prestarted`` tasks (already
        submitted: task id -> the tests expected from it) as part of the pass."""
        run_id = self.settings.run_id
        documents = []
        state = _PassState(rerun=rerun, task_ids=[], node_ids_of={})
        for task_id, node_ids in (prestarted or {}).items():
            state.task_ids.append(task_id)
            state.node_ids_of[task_id] = list(node_ids)
        self.outcome.chunks += len(state.task_ids)
        for index, (chunk, exclude) in enumerate(chunks):
            task_id = f"{run_id}.r{rerun}.{index:05d}"
            state.task_ids.append(task_id)
            state.node_ids_of[task_id] = list(chunk.node_ids)
            documents.append(
                chunk_document(task_id, chunk, self.settings, exclude=exclude, rerun=rerun)
            )
        for start in range(0, len(documents), SUBMIT_BATCH):
            self._submit(documents[start : start + SUBMIT_BATCH])
        self.outcome.chunks += len(documents)
        try:
            self._follow(state)
        except BaseException:
            # Ctrl-C or a lost coordinator: leave nothing running for nobody.
            self._cancel_open(state)
            raise

    def _through_outages(self, call: Callable[[], T]) -> T:
        """``call()``, tried again every poll interval while the coordinator cannot
        be reached or answers 502-504, for up to :data:`OUTAGE_SECONDS` of one
        outage, once it has answered this run; then (or on any other refusal)
        its error is raised."""
        since: float | None = None
        while True:
            try:
                answer = call()
            except FleetError as exc:
                now = self._clock()
                since = now if since is None else since
                # An answer of 502-504 means something is there and says "not now"
                # (a coordinator whose disk is full answers 503 from the start); no
                # answer at all is waited out only once this run has reached it, so a
                # wrong address fails at once instead of looking like a hang.
                answered = exc.status != 0
                transient = exc.status in TRANSIENT_STATUSES and (answered or self._reached)
                if not transient or now - since > OUTAGE_SECONDS:
                    raise
            else:
                self._reached = True
                return answer
            self._sleep(self.settings.poll_interval_seconds)

    def _submit(self, documents: Sequence[dict[str, Any]]) -> None:
        """Submit chunks through outages. A try whose answer was lost may have been
        committed: the next try is then refused as a duplicate, which means done."""
        tries = 0

        def once() -> None:
            nonlocal tries
            tries += 1
            try:
                self.client.submit(documents)
            except FleetError as exc:
                if tries == 1 or exc.code != DUPLICATE_CODE:
                    raise

        self._through_outages(once)

    def _follow(self, state: _PassState) -> None:
        """Poll until every task of the pass is finished and all its rows are read."""
        while True:
            all_finished = self._poll(state)
            if all_finished:
                # Rows commit with (or before) their task's final status, so
                # one more read after seeing every task finished gets the rest.
                self._poll(state)
                break
            if self._should_stop() and not self.outcome.stopped_early:
                self.outcome.stopped_early = True
                self._cancel_open(state)
            self._show_progress(state, force=False)
            self._sleep(self.settings.poll_interval_seconds)
        self._report_unrun(state)
        self._show_progress(state, force=True)

    def _poll(self, state: _PassState) -> bool:
        while True:
            answer = self._through_outages(
                lambda: self.client.test_run(self.settings.run_id, after_seq=self._last_seq)
            )
            for row in answer["tests"]:
                self._arrived(state, row)
            self._last_seq = max(self._last_seq, int(answer["last_seq"]))
            if not answer.get("more"):
                break
        now = self._clock()
        finished = True
        mine = set(state.task_ids)
        for task in answer["tasks"]:
            task_id = task["task_id"]
            if task_id not in mine:
                continue
            state.statuses[task_id] = task
            status = TaskStatus(task["status"])
            if not status.is_terminal:
                finished = False
                self._watch_unschedulable(state, task, status, now)
            if task.get("worker_id") and status is not TaskStatus.QUEUED:
                self.outcome.workers.add(str(task["worker_id"]))
        if len(state.statuses) < len(mine):
            finished = False  # not every task is visible yet (should not happen)
        if self._stop_at is not None and not finished:
            self._cancel_past_stop(state)
        return finished

    def _watch_unschedulable(
        self, state: _PassState, task: dict[str, Any], status: TaskStatus, now: float
    ) -> None:
        task_id = task["task_id"]
        reason = task.get("unschedulable_reason")
        if status is not TaskStatus.QUEUED or not reason:
            state.unschedulable_since.pop(task_id, None)
            return
        since = state.unschedulable_since.setdefault(task_id, now)
        if now - since >= self.settings.unschedulable_wait_seconds and task_id not in (
            state.given_up
        ):
            state.given_up[task_id] = f"no connected worker can run it: {reason}"
            cancel_all(self.client, [task_id])

    def _arrived(self, state: _PassState, row: dict[str, Any]) -> None:
        nodeid = str(row["nodeid"])
        if nodeid in state.reported or nodeid not in state.expected(str(row["task_id"])):
            return  # a repeat, another pass's, or a prestarted test no longer collected
        state.reported.add(nodeid)
        if self._past_stop(nodeid):
            return  # a serial run would have stopped before it
        record = TestRecord.model_validate(row["record"])
        worker = str(row["worker_id"])
        self._done += 1
        if record.interrupted is not None:
            self._interrupted(record)
            self._emit(record, worker)
            return
        earlier = self._failed_before.get(nodeid)
        if record.outcome.is_failure:
            self._failures += 1
            failed_on = [*(earlier.failed_on if earlier else []), worker]
            first = earlier.first_failure if earlier else _failure_summary(record)
            if state.rerun < self.settings.rerun_failures and not self.outcome.stopped_early:
                self._held[nodeid] = _Held(record, failed_on, first)
                return
        elif earlier is not None:
            self.outcome.flaky.append(
                FlakyTest(nodeid, tuple(earlier.failed_on), worker, earlier.first_failure)
            )
        self._emit(record, worker)

    def _interrupted(self, record: TestRecord) -> None:
        """A test stopped its session: stop the run after it, as a serial run stops
        (chunks of later tests are cancelled once the poll has read every row)."""
        self.outcome.interrupted = record.interrupted
        self.outcome.stopped_early = True
        position = self._position.get(record.nodeid, 0)
        self._stop_at = position if self._stop_at is None else min(position, self._stop_at)

    def _cancel_past_stop(self, state: _PassState) -> None:
        """Cancel the unfinished chunks whose unreported tests all come after the
        test that stopped the run; those with earlier tests go on."""
        chosen = []
        for task_id in state.task_ids:
            status = state.statuses.get(task_id, {}).get("status")
            if task_id in state.cancelled or _is_final(status):
                continue
            waiting = [n for n in state.node_ids_of[task_id] if n not in state.reported]
            if waiting and all(self._past_stop(nodeid) for nodeid in waiting):
                state.cancelled.add(task_id)
                chosen.append(task_id)
        cancel_all(self.client, chosen)

    def _past_stop(self, nodeid: str) -> bool:
        """Whether ``nodeid`` comes after the test that stopped the run (if one did)."""
        if self._stop_at is None:
            return False
        return self._position.get(nodeid, self._stop_at + 1) > self._stop_at

    def _emit(self, record: TestRecord, worker: str) -> None:
        self._failed_before.pop(record.nodeid, None)
        self._report(record, worker)

    def _report_unrun(self, state: _PassState) -> None:
        """Tests of chunks that ended without reporting them become errors saying why
        (after -x, none: the run was stopped; after an interruption, those before it)."""
        if self.outcome.stopped_early and self.outcome.interrupted is None:
            return
        for task_id in state.task_ids:
            missing = [
                n
                for n in state.node_ids_of[task_id]
                if n not in state.reported and not self._past_stop(n)
            ]
            if not missing:
                continue
            reason = state.given_up.get(task_id) or _task_failure(state.statuses.get(task_id))
            for nodeid in missing:
                state.reported.add(nodeid)
                self.outcome.not_run[nodeid] = reason
                self._done += 1
                self._failures += 1
                record = self._not_run_record(nodeid, f"not run: {reason}")
                earlier = self._failed_before.get(nodeid)
                worker = str(state.statuses.get(task_id, {}).get("worker_id") or "")
                # A chunk no worker can take would wait out the same fate again.
                if state.rerun < self.settings.rerun_failures and task_id not in state.given_up:
                    failed_on = [*(earlier.failed_on if earlier else []), worker]
                    self._held[nodeid] = _Held(record, [w for w in failed_on if w], reason)
                else:
                    self._emit(record, worker)

    def _not_run_record(self, nodeid: str, message: str) -> TestRecord:
        test = self._tests.get(nodeid)
        location = test.location if test else TestLocation(path=nodeid.split("::")[0])
        return TestRecord(
            nodeid=nodeid,
            location=location,
            phases=[
                PhaseReport(when=TestPhase.SETUP, outcome=ReportOutcome.FAILED, longrepr=message)
            ],
        )

    def _cancel_open(self, state: _PassState) -> None:
        cancel_all(
            self.client,
            [
                task_id
                for task_id in state.task_ids
                if not _is_final(state.statuses.get(task_id, {}).get("status"))
            ],
        )

    def _show_progress(self, state: _PassState, *, force: bool) -> None:
        if self._progress is None:
            return
        now = self._clock()
        if not force and now - self._last_progress < self.settings.progress_interval_seconds:
            return
        self._last_progress = now
        statuses = [TaskStatus(t["status"]) for t in state.statuses.values()]
        busy = {
            str(t["worker_id"])
            for t in state.statuses.values()
            if TaskStatus(t["status"]) in (TaskStatus.ASSIGNED, TaskStatus.RUNNING)
            and t.get("worker_id")
        }
        self._progress(
            RunProgress(
                tests_done=self._done,
                tests_total=len(self._tests),
                failures=self._failures,
                workers_busy=len(busy),
                chunks_queued=sum(1 for s in statuses if s is TaskStatus.QUEUED),
                chunks_running=sum(
                    1 for s in statuses if s in (TaskStatus.ASSIGNED, TaskStatus.RUNNING)
                ),
                rerun=state.rerun,
            )
        )


def _failure_summary(record: TestRecord) -> str:
    text = record.failure_text.strip().splitlines()
    return text[-1] if text else "failed"


def _task_failure(task: dict[str, Any] | None) -> str:
    if task is None:
        return "its chunk task was never seen by the coordinator"
    error = task.get("error") or {}
    where = f" on worker {task['worker_id']}" if task.get("worker_id") else ""
    message = error.get("message") or "no result"
    return f"chunk {task['task_id']} {task['status']}{where}: {message}"


def hardware_of(markers: Iterable[Any]) -> tuple[str, ...]:
    """The hardware kinds a test's ``fleet`` markers require (any-of), sorted."""
    kinds: set[str] = set()
    for marker in markers:
        kinds.update(str(k) for k in marker.kwargs.get("hardware", ()))
    return tuple(sorted(kinds))
