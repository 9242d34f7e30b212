"""Wall time of one pytest suite: serial pytest, pytest-xdist, and ``testfleet run``.

Run:  .venv/bin/python benchmarks/suite.py [--tests 400] [--workers 8] [--rounds 3]
          [--env lean|current] [--bytecode-cache on|off|inherit] [--timeline]

``--env lean`` (the default) first re-executes the script in a cached virtual
environment with only pytest, pytest-xdist and testfleet's runtime
dependencies, so that every peer (serial pytest, xdist, the ``testfleet run``
client and the fleet's coordinator and workers) runs the same interpreter with
the plugins a user's project would have, not testfleet's dev tools (which cost
about 1.6 CPU-s per pytest session start here); ``--env current`` runs in the
interpreter the script was started with. See suite_env.py.

``--bytecode-cache on`` (the default) lets every peer write and read
``__pycache__``, as Python does unless ``PYTHONDONTWRITEBYTECODE`` is set;
``off`` sets it for every peer (each process then compiles every module it
imports, pytest's rewritten test modules included); ``inherit`` keeps this
shell's setting. The ``env:`` line says which.

It generates a seeded suite into a temporary directory: ``--tests`` tests over
about ``--tests / 20`` modules, each of which only ``time.sleep()``\\ s for its
duration. Durations are lognormal with a median of 20 ms and sigma 1.33, capped
at 1 s: the mean is then about 47.5 ms, so 400 tests sum to about 19 s (the
script prints the generated total and the longest test). Then, for each round,
it times the whole command (a subprocess, start to exit) of:

* serial pytest: ``python -m pytest -q -p no:cacheprovider``;
* pytest-xdist: the same with ``-n WORKERS --dist worksteal``;
* ``testfleet run`` against a coordinator (its own DuckDB file in the temporary
  directory) and WORKERS local ``testfleet worker --slots 1`` processes. The
  fleet is started once, before anything is timed, and the script waits until
  ``GET /api/v1/workers`` lists every worker as connected: the fleet is warm.
  Each round copies the suite to a fresh directory, so its first fleet run
  finds no duration history for that path (chunks split by count) and the
  later ones (``--fleet-runs``) split by the durations the first one stored.

Every run's pytest summary line must report all tests passed and nothing else
failing; otherwise the script stops and prints that run's output. It prints a
table of median wall seconds over the rounds; ideal = max(sum of the generated
durations / WORKERS, longest test); efficiency = ideal / wall; "x xdist" =
xdist's wall / this wall (above 1: faster than xdist).

Every process it starts is in its own process group and is ended on exit,
including on Ctrl-C and on errors. Nothing here is asserted; the figures are
for the README.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from testfleet.fleetrun.summary_line import summary_counts
from testfleet.local_fleet import LocalFleet, LocalFleetError, WorkerOptions

# suite_env.py lies beside this file: on the path when run as a script, not
# when a test loads this module by its path.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_env import SuiteEnv, describe_env, enter_lean_env
from suite_timeline import (
    Attempt,
    Timeline,
    build_timeline,
    median_timeline,
    print_timeline,
    read_timeline,
)

#: Re-exported: the timeline's unit tests load this module and use them.
__all__ = ["Attempt", "Timeline", "build_timeline", "median_timeline"]

MEDIAN_SECONDS = 0.020
#: Chosen so the capped mean is about 47.5 ms (400 tests: about 19 s in all).
SIGMA = 1.33
CAP_SECONDS = 1.0
TESTS_PER_MODULE = 20
#: Generous bounds for processes to come up or finish (never expectations).
START_TIMEOUT = 120.0
RUN_TIMEOUT = 600.0


# ------------------------------------------------------------------ the suite


@dataclass
class Suite:
    """A generated suite: where it is and each test's sleep, in seconds."""

    root: Path
    durations: list[float]

    @property
    def total(self) -> float:
        return sum(self.durations)

    @property
    def longest(self) -> float:
        return max(self.durations)


def draw_durations(tests: int, seed: int) -> list[float]:
    """``tests`` lognormal durations (median 20 ms, capped at 1 s), seeded."""
    rng = random.Random(seed)
    return [
        min(CAP_SECONDS, rng.lognormvariate(math.log(MEDIAN_SECONDS), SIGMA)) for _ in range(tests)
    ]


def write_suite(root: Path, durations: Sequence[float]) -> Suite:
    """Write one test per duration, dealt round-robin over about 20-per-module files."""
    root.mkdir(parents=True)
    # An empty ini file pins the rootdir here, whatever lies above.
    (root / "pytest.ini").write_text("[pytest]\n")
    modules = max(1, round(len(durations) / TESTS_PER_MODULE))
    bodies: list[list[str]] = [["import time\n"] for _ in range(modules)]
    for index, duration in enumerate(durations):
        bodies[index % modules].append(
            f"\n\ndef test_t{index:04d}():\n    time.sleep({duration:.4f})\n"
        )
    for number, body in enumerate(bodies):
        (root / f"test_mod_{number:02d}.py").write_text("".join(body))
    return Suite(root, [round(d, 4) for d in durations])


# ------------------------------------------------------------------ processes


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process group ``process`` leads (it was started in its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


@dataclass
class Timed:
    """One timed command: its wall seconds, exit status, combined output, when
    it started and ended (epoch seconds) and when each output line came."""

    wall: float
    returncode: int
    output: str
    started: float = 0.0
    ended: float = 0.0
    line_times: list[tuple[float, str]] = field(default_factory=list)
    #: CPU seconds (user + system) of the command and the children it waited for.
    cpu: float = 0.0

    def first_line(self, text: str) -> float | None:
        """When the first output line containing ``text`` came (epoch seconds)."""
        return next((at for at, line in self.line_times if text in line), None)


def timed(args: Sequence[str], cwd: Path) -> Timed:
    """Run ``args`` in ``cwd`` to completion and time it; its group dies with us.
    Output lines are read as they come and stamped (for the timeline)."""
    lines: list[tuple[float, str]] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_epoch = time.time()
    started = time.perf_counter()
    process = subprocess.Popen(
        args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.append((time.time(), raw.decode("utf-8", errors="replace")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        process.wait(timeout=RUN_TIMEOUT)
        reader.join(RUN_TIMEOUT)
    except BaseException:
        signal_group(process, signal.SIGKILL)
        process.wait(10)
        raise
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = "".join(line for _, line in lines)
    return Timed(wall, process.returncode, output, started_epoch, started_epoch + wall, lines, cpu)


# ------------------------------------------------------------------ the fleet


def fleet_command(
    url: str, path: str, pytest_args: Sequence[str], run_id: str | None = None
) -> list[str]:
    """The ``testfleet run`` command line (the one place that knows its syntax)."""
    command = [sys.executable, "-m", "testfleet", "run", "--coordinator", url]
    if run_id is not None:
        command += ["--run-id", run_id]
    return [*command, path, *pytest_args]


def fleet_run_available() -> str | None:
    """None when ``testfleet run`` exists here; otherwise why not."""
    probe = subprocess.run(
        [sys.executable, "-m", "testfleet", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode == 0:
        return None
    lines = (probe.stderr or probe.stdout).strip().splitlines()
    detail = next((line.strip(" │╭╰─") for line in lines if "run" in line.lower()), "")
    return f"`testfleet run --help` exited {probe.returncode}: {detail or 'no output'}"


def start_fleet(fleet: LocalFleet, workers: int) -> str:
    """Start a coordinator and ``workers`` single-slot workers; return once all are connected."""
    worker_ids = [f"suite-{number:02d}" for number in range(workers)]
    try:
        fleet.start_coordinator(timeout=START_TIMEOUT)
        for worker_id in worker_ids:
            fleet.start_worker(worker_id, WorkerOptions(slots=1), wait=False)
        fleet.wait_for_workers(worker_ids, timeout=START_TIMEOUT)
    except LocalFleetError as exc:
        raise SystemExit(f"{exc}\nsee {fleet.log_dir}") from None
    connected = [w for w in fleet.client.workers() if w["connected"]]
    lacking = [w["worker_id"] for w in connected if "test" not in w.get("task_types", [])]
    if lacking:
        print(f"  warning: workers without the `test` task type: {', '.join(lacking)}")
    # The timed `testfleet run` commands inherit this environment: the fleet's token.
    os.environ["TESTFLEET_TOKEN"] = fleet.token
    return fleet.url


def fleet_cpu(fleet: LocalFleet) -> float:
    """CPU seconds (user + system) the fleet's processes have used so far: the
    coordinator, the workers and their pytest sessions, ended children included
    (once reaped). The difference over a run is the fleet's CPU for it."""
    total = 0.0
    for process in fleet.processes.values():
        try:
            root = psutil.Process(process.pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for member in family:
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
    return total


# ------------------------------------------------------------------ checking


def check_all_passed(label: str, result: Timed, tests: int) -> None:
    """Stop the script loudly unless the run's summary says ``tests`` passed and no failure."""
    counts = summary_counts(result.output)
    bad = {k: v for k, v in (counts or {}).items() if k not in ("passed", "warnings")}
    if result.returncode != 0 or counts is None or counts.get("passed") != tests or bad:
        tail = "\n".join(result.output.strip().splitlines()[-40:])
        raise SystemExit(
            f"{label}: expected {tests} passed, got {counts} (exit {result.returncode})\n{tail}"
        )


# ------------------------------------------------------------------ main


def row(
    label: str, walls: list[float], cpus: list[float], ideal: float, xdist: float | None
) -> str:
    wall = statistics.median(walls)
    versus = f"{xdist / wall:7.2f}" if xdist else "      -"
    each = " ".join(f"{w:.2f}" for w in walls)
    cpu = statistics.median(cpus)
    return (
        f"  {label:<32} {wall:8.2f} {ideal:8.2f} {ideal / wall:10.0%} {versus} {cpu:7.2f}"
        f"   [{each}]"
    )


def run(args: argparse.Namespace, workdir: Path, fleet: LocalFleet) -> None:
    durations = draw_durations(args.tests, args.seed)
    template = write_suite(workdir / "suite", durations)
    modules = len(list(template.root.glob("test_*.py")))
    ideal = max(template.total / args.workers, template.longest)
    print(
        f"suite: {args.tests} tests in {modules} modules, seed {args.seed}, lognormal median "
        f"{MEDIAN_SECONDS * 1000:.0f} ms sigma {SIGMA} capped at {CAP_SECONDS:g} s: "
        f"total {template.total:.2f} s, longest {template.longest:.3f} s, "
        f"{sum(d >= CAP_SECONDS for d in template.durations)} at the cap"
    )
    print(f"ideal with {args.workers} workers: {ideal:.2f} s; {os.cpu_count()} cores here")

    unavailable = "skipped (--skip-fleet)" if args.skip_fleet else fleet_run_available()
    url = None
    if unavailable is None:
        url = start_fleet(fleet, args.workers)
        print(f"fleet: coordinator {url}, {args.workers} workers connected")
    else:
        print(f"testfleet run: not timed: {unavailable}")

    # Where `testfleet run` keeps each command's last collected test list (the
    # next run of the same command starts its chunks from it while it collects).
    os.environ["TESTFLEET_SUITE_CACHE"] = str(workdir / "suite-lists")
    common = ["-q", "-p", "no:cacheprovider"]
    xdist_args = ["-n", str(args.workers), "--dist", "worksteal"]
    walls: dict[str, list[float]] = {}
    #: CPU seconds of each run: the command's (and its children's), plus the fleet's.
    cpus: dict[str, list[float]] = {}
    run_ids: dict[str, str] = {}
    timelines: dict[str, list[Timeline]] = {}
    for round_number in range(1, args.rounds + 1):
        # A fresh path per round: the fleet keeps duration history per path.
        suite = workdir / f"round-{round_number}"
        shutil.copytree(template.root, suite)
        commands: list[tuple[str, list[str]]] = [
            ("serial pytest", [sys.executable, "-m", "pytest", *common]),
            (
                f"pytest-xdist -n {args.workers} worksteal",
                [sys.executable, "-m", "pytest", *common, *xdist_args],
            ),
        ]
        if url is not None:
            for number in range(1, args.fleet_runs + 1):
                history = "no history" if number == 1 else "with history"
                run_id = f"suite-{os.getpid()}-r{round_number}-f{number}"
                command = fleet_command(url, ".", common, run_id)
                commands.append((f"testfleet run #{number} ({history})", command))
                run_ids[commands[-1][0]] = run_id
        for label, command in commands:
            # Every runner starts on a settled machine: what the previous one
            # left running (xdist's workers exiting, a fleet worker replacing
            # its used pytest zygote once idle) is not timed against the next.
            time.sleep(args.settle)
            fleet_before = fleet_cpu(fleet) if label in run_ids else 0.0
            result = timed(command, suite)
            fleet_used = fleet_cpu(fleet) - fleet_before if label in run_ids else None
            check_all_passed(f"round {round_number}, {label}", result, args.tests)
            walls.setdefault(label, []).append(result.wall)
            cpus.setdefault(label, []).append(result.cpu + (fleet_used or 0.0))
            # testfleet says how it split the run (by count, or by past durations).
            how = next((s.strip() for s in result.output.splitlines() if "split by" in s), "")
            how = re.sub(r"\s*\([^)]*\)", "", how)  # without the list of workers
            lines = result.output.splitlines()
            prestarted = next((s for s in lines if "before collection" in s), "")
            if prestarted:
                how += f"; {prestarted.split(';')[0].strip()}"
            fleet_part = "" if fleet_used is None else f", fleet {fleet_used:.2f} s"
            print(
                f"  round {round_number}: {label:<32} {result.wall:7.2f} s "
                f"(CPU {result.cpu:.2f} s{fleet_part})  {how}".rstrip()
            )
            if args.timeline and label in run_ids:
                collected = result.first_line("[fleet] run ")
                timeline = read_timeline(
                    fleet, run_ids[label], result.started, result.ended, collected
                )
                print_timeline(label, timeline, args.workers)
                timelines.setdefault(label, []).append(timeline)

    xdist = statistics.median(next(w for label, w in walls.items() if "xdist" in label))
    print()
    print(f"medians over {args.rounds} round(s); ideal = max(total / {args.workers}, longest)")
    print(
        f"  {'':<32} {'wall s':>8} {'ideal s':>8} {'efficiency':>10} {'x xdist':>7} "
        f"{'CPU s':>7}   [rounds]"
    )
    for label, values in walls.items():
        print(row(label, values, cpus[label], ideal, None if "xdist" in label else xdist))
    print("  (CPU s: the command and its children, plus the fleet's processes for testfleet run)")
    if url is None:
        print(f"  {'testfleet run':<32} not timed: {unavailable}")
    for label, runs in timelines.items():
        print_timeline(f"{label}, medians over {len(runs)}", median_timeline(runs), args.workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tests", type=int, default=400)
    parser.add_argument("--workers", type=int, default=8, help="xdist -n and fleet workers")
    parser.add_argument("--rounds", type=int, default=1, help="repeat; the table shows medians")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--fleet-runs", type=int, default=3, help="testfleet runs per round (first: no history)"
    )
    parser.add_argument("--skip-fleet", action="store_true", help="time serial and xdist only")
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds to wait before each timed command (default 3)",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="after each fleet run, print where its wall time went (from its records)",
    )
    parser.add_argument(
        "--env",
        type=SuiteEnv,
        choices=list(SuiteEnv),
        default=SuiteEnv.LEAN,
        metavar="{lean,current}",
        help="lean (default): run every peer in a cached venv with only pytest, pytest-xdist "
        "and testfleet's runtime dependencies; current: in this interpreter",
    )
    parser.add_argument(
        "--bytecode-cache",
        choices=("on", "off", "inherit"),
        default="on",
        help="on (default, Python's own default): every peer may write and read "
        "__pycache__; off: PYTHONDONTWRITEBYTECODE=1 for every peer; inherit: as this "
        "shell has it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.tests < 1 or args.workers < 1 or args.rounds < 1 or args.fleet_runs < 1:
        parser.error("--tests, --workers, --rounds and --fleet-runs must be at least 1")
    # Set before the lean env is entered, so every peer inherits it. Python
    # writes bytecode unless told not to, and a user's machine normally lets it;
    # some machines (this project's development machines among them) set
    # PYTHONDONTWRITEBYTECODE=1, which makes every process of every peer compile
    # each module it imports (pytest's assertion rewriting included) from source.
    if args.bytecode_cache == "on":
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    elif args.bytecode_cache == "off":
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    if args.env is SuiteEnv.LEAN:
        # Returns only inside the lean env (otherwise it builds it if needed
        # and re-executes this script there, with the same arguments).
        enter_lean_env(
            Path(__file__).resolve().parents[1], [os.path.abspath(sys.argv[0]), *sys.argv[1:]]
        )
    print(describe_env(args.env), flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="testfleet-suite-"))
    # Started only if `testfleet run` is timed (see run).
    fleet = LocalFleet(workdir, db=workdir / "fleet.duckdb")
    # SIGTERM ends the script as Ctrl-C does, so the finally below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        run(args, workdir, fleet)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        # Workers first, then the coordinator; every group that lingers is killed.
        try:
            fleet.stop_all(grace=20)
        finally:
            fleet.close()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
