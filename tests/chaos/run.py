"""The long chaos run: ``python tests/chaos/run.py --minutes N --seed S``.

Not in CI (``test_chaos_short.py`` is the CI version). Runs one
:class:`~chaos_fleet.ChaosRun` for N minutes of faults, prints the schedule
as it goes and the figures table at the end, and exits 1 when an invariant
did not hold (the message names the seed to replay). Needs root (network
namespaces, a tmpfs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from chaos_faults import FaultKind
from chaos_fleet import ChaosConfig, ChaosRun


def _kinds(text: str) -> tuple[FaultKind, ...]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = {k.value for k in FaultKind}
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind(s) {bad}; choose from {', '.join(sorted(known))}"
        )
    return tuple(FaultKind(n) for n in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, required=True, help="how long faults go on")
    parser.add_argument("--seed", type=int, required=True, help="the schedule's seed (replay)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--namespaced", type=int, default=2)
    parser.add_argument(
        "--faults",
        type=_kinds,
        default=tuple(FaultKind),
        help="comma-separated fault kinds (default: all)",
    )
    parser.add_argument("--keep", type=Path, help="run under this folder and keep it (logs, db)")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error(f"--minutes must be > 0, not {args.minutes}")
    config = ChaosConfig(
        seed=args.seed,
        chaos_seconds=args.minutes * 60,
        workers=args.workers,
        namespaced=args.namespaced,
        kinds=args.faults,
    )
    with tempfile.TemporaryDirectory(prefix="testfleet-chaos-") as scratch:
        root = args.keep or Path(scratch)
        report = ChaosRun(config, root).run()
    if report.problems:
        print(report.failure_message())
        return 1
    print(report.figures())
    return 0


if __name__ == "__main__":
    sys.exit(main())
