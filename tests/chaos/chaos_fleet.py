"""The chaos harness: a real fleet on loopback, a workload, a seeded schedule of
faults, then the invariants and a figures table.

Callers: the CI test (``test_chaos_short.py``, a fixed seed list, about a
minute of faults) and the long run (``run.py --minutes N --seed S``).

The fleet is a :class:`~testfleet.local_fleet.LocalFleet` over TLS with
worker certificates and tokens, as a real one. Worker ``w0`` runs on this
machine's loopback; every other worker runs in a network namespace of its
own (``chaos_netns.py``) and reaches the coordinator through two forwarders:
one inside its namespace on ``127.0.0.1:<port>`` (so its URL and TLS host
check are the same as any worker's) and one here on the veth's host address,
a :class:`~chaos_proxy.ThreadedProxy` that can add latency, stall or reset
the link. Taking the veth down partitions that worker alone. The DuckDB file
lives on a small tmpfs (``chaos_disk.py``) when the disk-full fault is in
the mix.

Faults come one after another from :func:`chaos_faults.make_schedule`; each
is held, then healed (restart under the same id or on the same file and
port, SIGCONT, link up, latency off, ballast deleted). Between faults a
supervisor notices processes that exited on their own (not by a fault),
counts them in the figures and restarts them, as systemd would.

When the schedule ends the workload stops, every fault is healed, and the
fleet gets a bounded time to finish every accepted task and the pytest run;
then the coordinator is stopped and its file checked (``chaos_checks.py``).
The seed is printed first and is in every failure message.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chaos_checks import QUOTE, StoreFindings, figures_table, read_store
from chaos_disk import SmallDisk
from chaos_faults import Fault, FaultKind, make_schedule
from chaos_netns import Namespace, NamespacesUnavailable, create, delete_all, set_link
from chaos_proxy import ThreadedProxy
from chaos_workload import (
    PytestRuns,
    RunResult,
    Submitter,
    SubmitterFigures,
    run_serial,
    write_suite,
)

from testfleet.client import FleetClient, FleetError
from testfleet.domain.enums import TaskStatus
from testfleet.local_fleet import COORDINATOR, CoordinatorOptions, LocalFleet, WorkerOptions
from testfleet.security.pki import ca_files

PROXY_SCRIPT = Path(__file__).with_name("chaos_proxy.py")
TERMINAL = frozenset(s.value for s in TaskStatus if s.is_terminal)
#: How often the supervisor looks for processes that exited on their own.
SUPERVISE_SECONDS = 0.25


@dataclass(frozen=True)
class ChaosConfig:
    """One run: its seed, how long faults go on, the fleet and the workload."""

    seed: int
    chaos_seconds: float
    workers: int = 3
    #: How many of the workers (the last ones) run in namespaces behind proxies.
    namespaced: int = 2
    slots: int = 2
    kinds: tuple[FaultKind, ...] = tuple(FaultKind)
    pytest_tests: int = 200
    disk_mb: int = 64
    #: Bound on finishing every accepted task after the faults stop.
    settle_seconds: float = 180.0
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 3.0

    def __post_init__(self) -> None:
        if self.chaos_seconds <= 0:
            raise ValueError(f"chaos_seconds must be > 0, not {self.chaos_seconds}")
        if not 1 <= self.workers <= 16 or not 0 <= self.namespaced <= self.workers:
            raise ValueError(
                f"workers must be 1..16 and namespaced 0..workers, not {self.workers}, "
                f"{self.namespaced}"
            )


@dataclass
class ChaosReport:
    """Everything a run found: figures, and problems (empty when every invariant held)."""

    config: ChaosConfig
    schedule: list[Fault] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    unexpected_exits: list[str] = field(default_factory=list)
    submitted: SubmitterFigures | None = None
    store: StoreFindings | None = None
    serial: RunResult | None = None
    fleet_runs: list[RunResult] = field(default_factory=list)
    runs_refused_at_start: int = 0
    healthy_at_end: bool = False
    wall_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def figures(self) -> str:
        store = self.store or StoreFindings()
        serial = self.serial.counts if self.serial else None
        submitted = self.submitted or SubmitterFigures()
        rows: list[tuple[str, object]] = [("seed", self.config.seed)]
        for kind in FaultKind:
            if self.injected[kind.value]:
                rows.append((f"faults: {kind.value}", self.injected[kind.value]))
        rows += [
            ("faults: total", sum(self.injected.values())),
            ("tasks accepted", store.accepted),
            ("tasks finished", store.finished),
            ("lost", len(store.lost) + len(store.unfinished)),
            ("duplicates", len(store.duplicates)),
            ("attempts left open", len(store.open_attempts)),
            ("late results kept (not counted)", store.late_results),
            ("submissions refused, retried", dict(sorted(submitted.refusals.items()))),
            ("processes that exited on their own", len(self.unexpected_exits)),
            ("pytest serial", serial),
            ("pytest runs through testfleet run", len(self.fleet_runs)),
            ("  refused at start (no coordinator or no worker)", self.runs_refused_at_start),
            ("  matching the serial counts", sum(r.counts == serial for r in self.fleet_runs)),
            ("tests reported twice", len(store.tests_twice)),
            ("coordinator healthy at end", self.healthy_at_end),
            ("wall time (s)", round(self.wall_seconds, 1)),
        ]
        return figures_table(rows)

    def failure_message(self) -> str:
        lines = [
            f"chaos run with seed {self.config.seed} failed (replay: --seed {self.config.seed})"
        ]
        lines += [f"- {p}" for p in self.problems]
        lines += ["figures:", self.figures(), "faults:"]
        lines += [f"  {f.describe()}" for f in self.schedule]
        return "\n".join(lines)


class ChaosRun:
    """One chaos run under ``root``; :meth:`run` returns its :class:`ChaosReport`."""

    def __init__(self, config: ChaosConfig, root: Path, *, say: Callable[[str], None] = print):
        self.config = config
        self.root = root.absolute()
        self.say = say
        self.report = ChaosReport(config)
        self.worker_ids = [f"w{i}" for i in range(config.workers)]
        self.linked = self.worker_ids[config.workers - config.namespaced :]
        self.namespaces: dict[str, Namespace] = {}
        self.proxies: dict[str, ThreadedProxy] = {}
        self.disk: SmallDisk | None = None
        #: Processes we took down on purpose (not to be restarted by the supervisor).
        self.down: set[str] = set()
        #: Every worker process ever started (killed ones' groups are killed at the end).
        self.old_processes: list[subprocess.Popen[bytes]] = []
        self.fleet: LocalFleet | None = None

    # ---------------------------------------------------------------- set-up

    def _coordinator_options(self) -> CoordinatorOptions:
        return CoordinatorOptions(
            heartbeat_interval=self.config.heartbeat_interval,
            heartbeat_timeout=self.config.heartbeat_timeout,
            log_level="info",
        )

    def _worker_options(self, worker_id: str) -> WorkerOptions:
        namespace = self.namespaces.get(worker_id)
        return WorkerOptions(
            slots=self.config.slots,
            log_level="info",
            prefix=namespace.exec_prefix if namespace else (),
        )

    def _set_up(self) -> LocalFleet:
        db = None
        if FaultKind.DISK_FULL in self.config.kinds:
            self.disk = SmallDisk(self.root / "disk", self.config.disk_mb)
            self.disk.mount()
            db = self.disk.path / "fleet.duckdb"
        fleet = LocalFleet(self.root, db=db, tls=True, cwd=self.root)
        self.fleet = fleet
        for index, worker_id in enumerate(self.linked):
            namespace = create(index)
            self.namespaces[worker_id] = namespace
            proxy = ThreadedProxy((namespace.host_address, 0), ("127.0.0.1", fleet.port))
            self.proxies[worker_id] = proxy
            fleet.start(
                f"forward-{worker_id}",
                [
                    *namespace.exec_prefix,
                    sys.executable,
                    str(PROXY_SCRIPT),
                    "--listen",
                    f"127.0.0.1:{fleet.port}",
                    "--target",
                    f"{namespace.host_address}:{proxy.port}",
                ],
                with_credentials=False,
            )
        fleet.start_coordinator(self._coordinator_options())
        for worker_id in self.worker_ids:
            self._start_worker(worker_id)
        fleet.wait_for_workers(self.worker_ids)
        return fleet

    def _start_worker(self, worker_id: str) -> None:
        assert self.fleet is not None
        process = self.fleet.start_worker(worker_id, self._worker_options(worker_id), wait=False)
        self.old_processes.append(process)

    # ---------------------------------------------------------------- faults

    def _inject(self, fault: Fault) -> None:
        assert self.fleet is not None
        fleet, kind, target = self.fleet, fault.kind, fault.target
        self.say(f"  fault {fault.describe()}")
        self.report.injected[kind.value] += 1
        if kind in (FaultKind.WORKER_KILL, FaultKind.COORDINATOR_KILL):
            self.down.add(target)
            fleet.send_signal(target, signal.SIGKILL)
        elif kind in (FaultKind.WORKER_STOP, FaultKind.COORDINATOR_STOP):
            self.down.add(target)
            fleet.send_signal(target, signal.SIGSTOP)
        elif kind is FaultKind.PARTITION:
            set_link(self.namespaces[target], up=False)
        elif kind is FaultKind.SLOW_LINK:
            self.proxies[target].configure(latency_seconds=0.3)
        elif kind is FaultKind.STALLED_LINK:
            self.proxies[target].configure(stalled=True)
        elif kind is FaultKind.DROPPED_CONNECTIONS:
            self.proxies[target].drop()
        elif kind is FaultKind.DISK_FULL:
            assert self.disk is not None
            self.disk.fill()

    def _heal(self, fault: Fault) -> None:
        assert self.fleet is not None
        fleet, kind, target = self.fleet, fault.kind, fault.target
        if kind is FaultKind.WORKER_KILL:
            self._start_worker(target)
        elif kind is FaultKind.COORDINATOR_KILL:
            fleet.start_coordinator(self._coordinator_options())
        elif kind in (FaultKind.WORKER_STOP, FaultKind.COORDINATOR_STOP):
            fleet.send_signal(target, signal.SIGCONT)
        elif kind is FaultKind.PARTITION:
            set_link(self.namespaces[target], up=True)
        elif kind in (FaultKind.SLOW_LINK, FaultKind.STALLED_LINK):
            self.proxies[target].configure(latency_seconds=0.0, stalled=False)
        elif kind is FaultKind.DISK_FULL:
            assert self.disk is not None
            self.disk.free()
        self.down.discard(target)

    def _supervise(self, until: float) -> None:
        """Until ``until`` (monotonic), restart processes that exited on their own."""
        assert self.fleet is not None
        while True:
            for name in [COORDINATOR, *self.worker_ids]:
                process = self.fleet.processes.get(name)
                if name in self.down or process is None or process.poll() is None:
                    continue
                last = self.fleet.tail(name, 600).strip().splitlines()[-1:] or ["(empty log)"]
                note = f"{name} exited with {process.returncode}: {last[0][:200]}"
                self.report.unexpected_exits.append(note)
                self.say(f"  ! {note}; restarting it")
                if name == COORDINATOR:
                    self.fleet.start_coordinator(self._coordinator_options())
                else:
                    self._start_worker(name)
            if time.monotonic() >= until:
                return
            time.sleep(min(SUPERVISE_SECONDS, max(0.0, until - time.monotonic())))

    # -------------------------------------------------------------- the run

    def run(self) -> ChaosReport:
        config, report = self.config, self.report
        started = time.monotonic()
        self.say(
            f"chaos: seed {config.seed}, {config.chaos_seconds:g} s of faults, "
            f"{config.workers} workers ({len(self.linked)} namespaced)"
        )
        try:
            self._run(started)
        finally:
            report.wall_seconds = time.monotonic() - started
            self._tear_down()
        return report

    def _run(self, started: float) -> None:
        config, report = self.config, self.report
        fleet = self._set_up()
        report.schedule = make_schedule(
            config.seed, config.chaos_seconds, config.kinds, self.worker_ids, self.linked
        )
        project = write_suite(self.root / "suite", config.pytest_tests)
        report.serial = run_serial(project, fleet.env())
        ca = ca_files(fleet.pki).cert if fleet.pki is not None else None
        submitter = Submitter(fleet.url, fleet.token, ca, config.seed)
        submitter.start()
        pytest_runs = PytestRuns(
            project, fleet.url, fleet.env(), self.root, run_timeout=config.settle_seconds
        )
        pytest_runs.start()
        chaos_start = time.monotonic()
        try:
            for fault in report.schedule:
                self._supervise(chaos_start + fault.at)
                self._inject(fault)
                self._supervise(time.monotonic() + fault.hold_seconds)
                self._heal(fault)
            self._supervise(chaos_start + config.chaos_seconds)
        finally:
            report.submitted = submitter.stop()
            self._heal_everything()
        deadline = time.monotonic() + config.settle_seconds
        self.say(f"  faults done after {time.monotonic() - started:.0f} s; settling")
        self._wait_settled(fleet, report.submitted.accepted, deadline)
        report.fleet_runs = pytest_runs.stop(max(1.0, deadline - time.monotonic()))
        report.runs_refused_at_start = pytest_runs.refused_at_start
        report.healthy_at_end = self._healthy(fleet)
        fleet.stop_all()
        report.store = read_store(fleet.db, report.submitted.accepted)
        self._judge()

    def _heal_everything(self) -> None:
        """After the schedule (or a failure in it): no fault may outlive the run."""
        assert self.fleet is not None
        for namespace in self.namespaces.values():
            with contextlib.suppress(NamespacesUnavailable):
                set_link(namespace, up=True)
        for proxy in self.proxies.values():
            proxy.configure(latency_seconds=0.0, stalled=False)
        if self.disk is not None:
            self.disk.free()
        for name in [COORDINATOR, *self.worker_ids]:
            process = self.fleet.processes.get(name)
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
        self.down.clear()
        self._supervise(time.monotonic())

    def _wait_settled(self, fleet: LocalFleet, accepted: Sequence[str], deadline: float) -> None:
        """Until every accepted task is finished or ``deadline``; the supervisor
        keeps restarting what exits meanwhile."""
        wanted = set(accepted)
        ca = ca_files(fleet.pki).cert if fleet.pki is not None else None
        client = FleetClient(fleet.url, timeout=10, ca=ca, token=fleet.token)
        try:
            while time.monotonic() < deadline:
                try:
                    finished = self._finished(client, wanted)
                except FleetError:
                    finished = set()
                if finished >= wanted:
                    return
                self._supervise(min(deadline, time.monotonic() + 1.0))
        finally:
            client.close()

    @staticmethod
    def _finished(client: FleetClient, wanted: set[str]) -> set[str]:
        finished: set[str] = set()
        offset = 0
        while True:
            page = client.list_tasks(limit=1000, offset=offset)
            finished |= {t["task_id"] for t in page["tasks"] if t["status"] in TERMINAL}
            offset += len(page["tasks"])
            if not page["tasks"] or offset >= page["total"]:
                return finished & wanted

    @staticmethod
    def _healthy(fleet: LocalFleet) -> bool:
        try:
            return bool(fleet.client.health().get("status") == "ok")
        except FleetError:
            return False

    def _judge(self) -> None:
        report = self.report
        assert report.store is not None
        assert report.submitted is not None
        problems = report.store.problems()
        if report.submitted.unexpected_duplicates:
            reused = report.submitted.unexpected_duplicates[:QUOTE]
            problems.append(f"fresh task ids refused as duplicates: {reused}")
        if not report.submitted.accepted:
            problems.append("no task was accepted: the workload never ran")
        if not report.healthy_at_end:
            problems.append("the coordinator did not answer /api/v1/health at the end")
        problems += self._judge_pytest_runs()
        report.problems = problems

    def _judge_pytest_runs(self) -> list[str]:
        """Each ``testfleet run`` printed the serial run's counts and exit status,
        and stored one row per test."""
        report = self.report
        serial = report.serial
        assert serial is not None
        assert report.store is not None
        if serial.counts is None:
            return [f"serial pytest printed no summary:\n{serial.tail()}"]
        if not report.fleet_runs:
            return ["no testfleet run finished"]
        problems = []
        wrong_runs = [
            (number, run)
            for number, run in enumerate(report.fleet_runs, 1)
            if run.counts != serial.counts or run.returncode != serial.returncode
        ]
        if len(wrong_runs) > QUOTE:
            problems.append(
                f"{len(wrong_runs)} of {len(report.fleet_runs)} testfleet runs "
                f"disagreed with serial pytest; the first {QUOTE}:"
            )
        for number, run in wrong_runs[:QUOTE]:
            problems.append(
                f"testfleet run #{number} reported {run.counts} (exit {run.returncode}), "
                f"serial pytest {serial.counts} (exit {serial.returncode}); its output "
                f"(testfleet-run-{number}.log) ends:\n{run.tail()}"
            )
        tests = sum(serial.counts.values())
        wrong = {run: rows for run, rows in report.store.test_runs.items() if rows != tests}
        if wrong:
            problems.append(f"test_results rows per run, serial pytest ran {tests}: {wrong}")
        return problems

    def _tear_down(self) -> None:
        if self.fleet is not None:
            self.fleet.close()
            for process in self.old_processes:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
        for proxy in self.proxies.values():
            proxy.close()
        delete_all(list(self.namespaces.values()))
        if self.disk is not None:
            self.disk.unmount()
