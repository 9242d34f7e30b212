"""The fleet simulator: the real coordinator state and scheduler, on simulated time.

Callers: ``benchmarks/simulate.py`` and the unit tests; later, scheduling
policies are compared by replaying one trace through :class:`Simulator` with
each (``policy`` takes any function with
:func:`~testfleet.scheduling.scheduler.schedule`'s signature).

What is real: :class:`~testfleet.coordinator.state.CoordinatorState` receives
the same events the coordinator's loop posts (a worker's hello, its accept and
result frames, submissions, ticks) and runs one scheduling round per turn,
exactly as :class:`~testfleet.coordinator.loop.CoordinatorLoop` does. What is
simulated: the workers (each accepts every assignment at once and sends its
result ``duration / speed`` later), the network (none: a message arrives in the
next turn) and the store (none: each turn's write batch is counted and dropped).

A discrete-event loop: a heap of timed events (a batch of tasks submitted, an
attempt finished); the fake clock jumps to the next one; every event due by
then is applied in one turn, then the policy places what it can. Accept frames
ride along with the next turn, as they would reach the coordinator's next
turn. With ``turn_seconds`` > 0 a turn also waits until that long after the
previous one (the real loop batches what arrives while it commits), which
bounds the number of turns on a large trace; 0 (the default) gives every
distinct event time its own turn.

Not simulated: heartbeats and liveness (simulated workers never fail or go
silent, so the heartbeat timeout is set out of reach), failures and retries,
and the store's commit time.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from testfleet.coordinator.events import (
    Accepted,
    Event,
    SubmitTasks,
    Tick,
    WorkerConnected,
    WorkerFrame,
)
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.coordinator.state import CoordinatorState
from testfleet.domain.enums import HardwareKind, ResultStatus, TaskStatus, TaskType
from testfleet.domain.hardware import CpuInfo, GpuInfo, WorkerCapabilities
from testfleet.domain.result import SimulationStatus, TaskResult
from testfleet.domain.task import MAX_TIMEOUT_SECONDS, TaskSpec
from testfleet.domain.work_keys import SpeedSample
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Assign,
    AttemptResult,
    Hello,
    Result,
)
from testfleet.scheduling.scheduler import SchedulingPolicy, schedule
from testfleet.scheduling.view import SchedulingDecisions, SchedulingView
from testfleet.simulation.history import simulated_config
from testfleet.simulation.report import SimulationReport, percentile
from testfleet.simulation.trace import Trace, TraceTask, TraceWorker
from testfleet.testing.fake_clock import FakeClock

#: Heap entry kinds; a submission sorts before a finish at the same time (the
#: order only matters within one turn, where submissions are applied first).
_SUBMIT = 0
_FINISH = 1
#: A wake-up at a queued task's slice expiry (requirement fallbacks): a Tick then.
_WAKE = 2


class SimulationError(RuntimeError):
    """The coordinator state refused something the trace did (a bug in the trace
    or the simulator, never a figure to report)."""


@dataclass(slots=True)
class _Collect:
    """A reply that keeps what the state answered a submission."""

    values: list[object] = field(default_factory=list)

    def resolve(self, value: object) -> None:
        self.values.append(value)


@dataclass(slots=True)
class _Running:
    """An attempt on a simulated worker, from assignment to its result."""

    attempt_id: int
    task: TraceTask
    worker: TraceWorker
    connection: int
    duration: float


def simulation_settings(aging_seconds: float = 60.0) -> CoordinatorSettings:
    """Coordinator settings for a replay: the defaults, with liveness out of reach
    (simulated workers never go silent and send no heartbeats) and no speculative
    copies (simulated workers never straggle, and do not act on ``cancel``)."""
    return CoordinatorSettings(
        heartbeat_timeout_seconds=MAX_TIMEOUT_SECONDS,
        disconnect_grace_seconds=MAX_TIMEOUT_SECONDS,
        aging_seconds=aging_seconds,
        speculation_enabled=False,
    )


class Simulator:
    """Replays one :class:`Trace` under one policy; :meth:`run` returns the figures."""

    def __init__(
        self,
        trace: Trace,
        policy: SchedulingPolicy = schedule,
        *,
        policy_name: str | None = None,
        turn_seconds: float = 0.0,
        tick_seconds: float = 1.0,
        settings: CoordinatorSettings | None = None,
        history: Sequence[SpeedSample] = (),
    ) -> None:
        """``history``: past runs to seed the state's speed books with before the
        replay (:func:`~testfleet.simulation.history.past_runs`), as a coordinator
        seeds them from its store at start-up."""
        if turn_seconds < 0:
            raise ValueError("turn_seconds must be 0 or more")
        if tick_seconds <= 0:
            raise ValueError("tick_seconds must be greater than 0")
        self.trace = trace
        self.policy = policy
        self.policy_name: str = policy_name or str(getattr(policy, "__name__", "policy"))
        self.turn_seconds = turn_seconds
        self.tick_seconds = tick_seconds
        self.settings = settings or simulation_settings()
        self.history = history
        self._policy_seconds = 0.0
        self._decisions = 0
        #: Filled by :meth:`run`; exposed for tests that check one task's story.
        self.assigned_at: dict[str, float] = {}
        self.finished_at: dict[str, float] = {}
        self.worker_of: dict[str, str] = {}

    def _timed_policy(self, view: SchedulingView) -> SchedulingDecisions:
        started = time.perf_counter()
        decisions = self.policy(view)
        self._policy_seconds += time.perf_counter() - started
        self._decisions += len(decisions.placements)
        return decisions

    def run(self) -> SimulationReport:
        """Replay the trace to the end: until no event is left to happen."""
        wall_started = time.perf_counter()
        trace = self.trace
        # Trace times are seconds from 0; the state reads time only through
        # ``now``, taken from this clock, which only the loop below moves.
        clock = FakeClock(start=0.0)
        state = CoordinatorState(self.settings, clock.now(), policy=self._timed_policy)
        state.speeds.seed(self.history)
        now = clock.now()
        sequence = itertools.count()
        heap: list[tuple[float, int, int, object]] = []
        for submit_time, group in itertools.groupby(trace.tasks, key=lambda t: t.submit_time):
            heapq.heappush(heap, (submit_time, next(sequence), _SUBMIT, list(group)))
        by_connection = {index + 1: worker for index, worker in enumerate(trace.workers)}
        tasks = {task.task_id: task for task in trace.tasks}
        specs = _SpecMaker()
        results = _ResultMaker()
        accepts: dict[int, list[int]] = defaultdict(list)
        completed = rows = turns = 0
        busy: dict[HardwareKind, float] = defaultdict(float)
        # The workers' hellos are applied in a turn before the trace starts, so
        # the first submission does not wait for it.
        loop_free_at = 0.0
        next_tick = self.tick_seconds
        woken: set[float] = set()
        # Read once: an enum member read through its class is slow on Python 3.11.
        done = TaskStatus.COMPLETED

        events: list[Event] = [
            WorkerConnected(connection, _hello(worker))
            for connection, worker in by_connection.items()
        ]
        while True:
            for event in events:
                state.handle(event, now)
            state.schedule(now)
            effects = state.take_effects()
            turns += 1
            batch = effects.batch
            rows += len(batch.tasks) + len(batch.attempts) + len(batch.results)
            rows += len(batch.workers)
            completed += sum(t.status is done for t in batch.tasks)
            for _, value in effects.replies:
                if not isinstance(value, Accepted):
                    raise SimulationError(f"the coordinator state refused a submission: {value}")
            for connection, message in effects.sends:
                if not isinstance(message, Assign):
                    continue  # welcome, ack: nothing a simulated worker acts on
                worker = by_connection[connection]
                for assignment in message.assignments:
                    task = tasks[assignment.task.task_id]
                    duration = task.duration_on(worker)
                    self.assigned_at.setdefault(task.task_id, now)
                    self.worker_of[task.task_id] = worker.worker_id
                    busy[worker.hardware_class] += duration
                    accepts[connection].append(assignment.attempt_id)
                    running = _Running(assignment.attempt_id, task, worker, connection, duration)
                    heapq.heappush(heap, (now + duration, next(sequence), _FINISH, running))
            expiry = state.queue.next_slice_expiry()
            if heap and expiry is not None and expiry > now and expiry not in woken:
                # Only while something else is still to happen: a task no slice
                # of which can ever run must not keep the replay going.
                woken.add(expiry)
                heapq.heappush(heap, (expiry, next(sequence), _WAKE, None))
            if not heap:
                break
            # The next turn: at the next event, but not before the loop is free.
            now = clock.advance(max(heap[0][0], loop_free_at) - now)
            loop_free_at = now + self.turn_seconds
            events = [
                WorkerFrame(connection, Accept(attempt_ids=ids))
                for connection, ids in accepts.items()
            ]
            accepts.clear()
            finished: dict[int, list[AttemptResult]] = defaultdict(list)
            while heap and heap[0][0] <= now:
                at, _, kind, payload = heapq.heappop(heap)
                if kind == _WAKE:
                    events.append(Tick())
                elif kind == _SUBMIT:
                    assert isinstance(payload, list)
                    events.append(SubmitTasks([specs.spec(t) for t in payload], _Collect(), None))
                else:
                    assert isinstance(payload, _Running)
                    self.finished_at[payload.task.task_id] = at
                    finished[payload.connection].append(results.result(payload))
            events.extend(
                WorkerFrame(connection, Result(results=items))
                for connection, items in finished.items()
            )
            if now >= next_tick:
                events.append(Tick())
                next_tick = now + self.tick_seconds
        return self._report(state, completed, rows, turns, busy, time.perf_counter() - wall_started)

    def _report(
        self,
        state: CoordinatorState,
        completed: int,
        rows: int,
        turns: int,
        busy: dict[HardwareKind, float],
        wall_seconds: float,
    ) -> SimulationReport:
        trace = self.trace
        start = trace.tasks[0].submit_time if trace.tasks else 0.0
        end = max(self.finished_at.values(), default=start)
        makespan = end - start
        waits = [
            self.assigned_at[t.task_id] - t.submit_time
            for t in trace.tasks
            if t.task_id in self.assigned_at
        ]
        slots: dict[HardwareKind, int] = defaultdict(int)
        for worker in trace.workers:
            slots[worker.hardware_class] += worker.slots
        utilisation = {
            kind: (busy[kind] / (count * makespan) if makespan > 0 else 0.0)
            for kind, count in sorted(slots.items())
        }
        return SimulationReport(
            policy=self.policy_name,
            workers=len(trace.workers),
            tasks=len(trace.tasks),
            tasks_completed=completed,
            tasks_left=len(state.tasks),
            makespan_seconds=makespan,
            queue_wait_p50_seconds=percentile(waits, 0.50),
            queue_wait_p99_seconds=percentile(waits, 0.99),
            utilisation=utilisation,
            decisions=self._decisions,
            turns=turns,
            rows_dropped=rows,
            wall_seconds=wall_seconds,
            policy_seconds=self._policy_seconds,
        )


def _capabilities(
    hardware: tuple[HardwareKind, ...], slots: int, gpu_model: str | None = None
) -> WorkerCapabilities:
    cuda = HardwareKind.CUDA in hardware
    gpus = (
        [
            GpuInfo(
                index=0,
                vendor="nvidia",
                name=gpu_model or "NVIDIA H100",
                memory_gb=80,
                compute_capability=9.0,
            )
        ]
        if cuda
        else []
    )
    return WorkerCapabilities(
        hostname="simulated",
        os="Linux",
        python_version="3.11",
        cpu=CpuInfo(logical_cores=max(slots, 1)),
        memory_gb=64.0,
        gpus=gpus,
        hardware=list(hardware),
        task_types=[TaskType.SIMULATED],
    )


_CAPABILITIES: dict[tuple[tuple[HardwareKind, ...], int, str | None], WorkerCapabilities] = {}


def _hello(worker: TraceWorker) -> Hello:
    """The hello a simulated worker sends (capabilities shared between equal workers)."""
    key = (tuple(worker.hardware), worker.slots, worker.gpu_model)
    capabilities = _CAPABILITIES.get(key)
    if capabilities is None:
        capabilities = _CAPABILITIES[key] = _capabilities(*key)
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id=worker.worker_id,
        session_key=f"simulated-session-{worker.worker_id}",
        capabilities=capabilities,
        slots=worker.slots,
    )


class _SpecMaker:
    """Task specs for trace tasks: one validated spec per distinct shape, copied
    with each task's id (validating 100,000 equal documents would be most of a
    large replay's time and would check nothing new)."""

    def __init__(self) -> None:
        self._templates: dict[tuple[str, int, str, str | None], TaskSpec] = {}
        # Requirement keys by the identity of the requirements object (with
        # the object, so the id cannot be reused): a trace's tasks of one kind
        # share one object, and working the key out per task was 4% of a
        # 10,000-worker replay.
        self._keys: dict[int, tuple[object, str]] = {}

    def spec(self, task: TraceTask) -> TaskSpec:
        requirements = task.requirements
        known = self._keys.get(id(requirements))
        if known is None or known[0] is not requirements:
            known = self._keys[id(requirements)] = (requirements, requirements.key())
        fallbacks = [f.model_dump() for f in task.fallbacks] if task.fallbacks else []
        key = (known[1], task.priority, repr(fallbacks) if fallbacks else "", task.work)
        template = self._templates.get(key)
        # Work seen once gets a config of its own (its id's number), so no two
        # such tasks share a work key: nothing about one says how long another takes.
        update: dict[str, object] = {"task_id": task.task_id}
        if task.work is None:
            update["config"] = simulated_config(task.task_id)
        if template is None:
            template = self._templates[key] = TaskSpec.model_validate(
                {
                    "task_id": task.task_id,
                    "type": TaskType.SIMULATED.value,
                    "priority": task.priority,
                    "requirements": task.requirements.model_dump(),
                    "fallbacks": fallbacks,
                    # The work's name, as a config field a simulated task has,
                    # so that its work key (a hash of the config) tells the
                    # repeats of one piece of work apart from other work.
                    "config": {} if task.work is None else simulated_config(task.work),
                    "timeout_seconds": MAX_TIMEOUT_SECONDS,
                }
            )
        return template.model_copy(update=update)


class _ResultMaker:
    """A completed result per finished attempt (validated: for these few fields that
    is cheaper than copying a template, measured at 3.0 against 4.1 us)."""

    def __init__(self) -> None:
        self._simulated = SimulationStatus(is_simulated=True)

    def result(self, running: _Running) -> AttemptResult:
        result = TaskResult(
            task_id=running.task.task_id,
            worker_id=running.worker.worker_id,
            status=ResultStatus.COMPLETED,
            execution_time_seconds=running.duration,
            simulation_status=self._simulated,
        )
        return AttemptResult(attempt_id=running.attempt_id, result=result)
