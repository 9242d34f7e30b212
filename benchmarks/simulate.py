"""Replay a fleet trace through the real coordinator state and scheduler.

Run: .venv/bin/python benchmarks/simulate.py --workers 10000 --tasks 100000 --seed 1
     [--trace FILE] [--save-trace FILE] [--turn-seconds S] [--profile] [--default-gc]
     [--works N] [--policy best-fit|estimated-finish | --compare]

Without ``--trace`` the trace is generated from ``--seed``
(:mod:`testfleet.simulation.generator`: a mixed CPU/GPU fleet, mixed CPU
tests, GPU jobs and GPU-accelerated jobs); ``--save-trace`` writes it as JSON
lines so the same trace can be replayed later with ``--trace``.

Prints makespan, queue wait p50/p99, utilisation per hardware class, tasks
completed, scheduling decisions, and decisions per second of wall time (the
issue's aim: at least 10,000 at 10,000 workers x 100,000 tasks).

``--turn-seconds`` (default 0.1) is how long one turn of the coordinator's
loop lasts: events that arrive meanwhile are applied together in the next
turn, as the real loop batches what arrives while it commits (about 120 ms a
commit in issue 14's dispatch figures). 0 gives every distinct event time its
own turn. ``--profile`` prints where the wall time went (cProfile, top 25).

``--policy`` picks the placement policy (``scheduling/policies.py``; default
best-fit); ``--compare`` replays the same trace under every policy, one after
the other in this process, and prints each one's figures and a table side by
side. ``--works N`` makes the generated tasks repeat N pieces of work (the
history that estimated finish learns worker speeds and durations from; see
``simulation/generator.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from pathlib import Path

from testfleet.scheduling.policies import PolicyName, policy_for
from testfleet.simulation import Simulator, TraceError, generate_trace, load_trace
from testfleet.simulation.history import past_runs
from testfleet.simulation.report import SimulationReport
from testfleet.simulation.trace import dump_trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load", type=float, default=1.0, help="arrival rate / fleet capacity")
    parser.add_argument("--trace", type=Path, help="replay this JSON-lines trace instead")
    parser.add_argument("--save-trace", type=Path, help="write the trace replayed here")
    parser.add_argument("--turn-seconds", type=float, default=0.1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--works", type=int, default=0, help="repeated pieces of work (0: none)")
    parser.add_argument(
        "--history", type=int, default=0, help="past runs of each work to seed speeds with"
    )
    policies = parser.add_mutually_exclusive_group()
    policies.add_argument(
        "--policy",
        type=PolicyName,
        default=PolicyName.BEST_FIT,
        choices=list(PolicyName),
        metavar="|".join(PolicyName),
    )
    policies.add_argument("--compare", action="store_true", help="replay under every policy")
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="leave Python's garbage collector as it is (see tune_gc: it is tuned by default)",
    )
    args = parser.parse_args(argv)
    if args.turn_seconds < 0:
        parser.error("--turn-seconds must be 0 or more")
    if args.history < 0:
        parser.error("--history must be 0 or more")

    started = time.perf_counter()
    try:
        if args.trace is not None:
            trace = load_trace(args.trace)
            source = f"trace {args.trace}"
        else:
            trace = generate_trace(args.workers, args.tasks, args.seed, args.load, args.works)
            source = f"generated, seed {args.seed}, load {args.load}, works {args.works}"
    except (TraceError, ValueError) as error:
        print(f"simulate: {error}", file=sys.stderr)
        return 2
    prepared = time.perf_counter() - started
    # The trace's objects live for the whole replay: move them out of the
    # collector's reach so its full passes do not walk them again and again
    # (about 12% of a 3,000-worker replay's wall time).
    gc.collect()
    gc.freeze()
    if not args.default_gc:
        tune_gc()
    if args.save_trace is not None:
        dump_trace(trace, args.save_trace)

    print(f"trace                 {source} ({prepared:.2f} s to prepare)")
    print(f"turn                  {args.turn_seconds} s")
    print(f"garbage collector     {'default' if args.default_gc else 'tuned (see tune_gc)'}")
    # The same past runs for every policy (best fit ignores them).
    history = past_runs(trace, args.history, args.seed)
    if history:
        print(f"history               {len(history):,} past runs")
    reports = []
    for name in list(PolicyName) if args.compare else [args.policy]:
        simulator = Simulator(
            trace,
            policy_for(name),
            policy_name=name.value,
            turn_seconds=args.turn_seconds,
            history=history,
        )
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        report = simulator.run()
        if profiler is not None:
            profiler.disable()
        reports.append(report)
        for line in report.lines():
            print(line)
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    if len(reports) > 1:
        print()
        for line in comparison(reports):
            print(line)
    return 0


def comparison(reports: list[SimulationReport]) -> list[str]:
    """The policies side by side (a Markdown table, as the README quotes it), with
    each one's makespan and waits as a ratio of the first's."""
    kinds = sorted({kind for r in reports for kind in r.utilisation}, key=str)
    head = ["policy", "makespan s", "wait p50 s", "wait p99 s"]
    head += [f"util {kind.value}" for kind in kinds] + ["makespan vs first"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = reports[0].makespan_seconds
    for r in reports:
        cells = [
            r.policy,
            f"{r.makespan_seconds:,.1f}",
            f"{r.queue_wait_p50_seconds:,.2f}",
            f"{r.queue_wait_p99_seconds:,.2f}",
        ]
        cells += [f"{r.utilisation.get(kind, 0.0):.1%}" for kind in kinds]
        cells.append(f"{r.makespan_seconds / first:.3f}" if first > 0 else "-")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def tune_gc() -> None:
    """Keep the cyclic garbage collector from walking the replay's long-lived state
    again and again.

    The coordinator state only grows during a replay (every task, attempt and
    result record stays), and each older-generation collection walked all of
    it: 43% of a 10,000 x 100,000 replay's CPU time (measured with the
    collector off: 16.4 -> 9.3 CPU seconds, same decisions). So whatever
    survives a generation-1 or -2 collection is frozen (moved where the
    collector no longer looks; reference counting still frees it), and young
    objects are collected every 20,000 allocations instead of 700. Together:
    16.4 -> 10.3 CPU seconds. It changes what the process spends on memory
    bookkeeping, not one decision (the figures are the same either way;
    ``--default-gc`` shows it).
    """

    def freeze_survivors(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] >= 1:
            gc.freeze()

    gc.callbacks.append(freeze_survivors)
    gc.set_threshold(20_000, 50, 100)


if __name__ == "__main__":
    sys.exit(main())
