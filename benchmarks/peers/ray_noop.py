"""Peer figure for benchmarks/dispatch.py: Ray running N no-op tasks on this machine.

Ray is not a testfleet dependency (it is large); install it in a separate
virtual environment and point dispatch.py at that interpreter:

    python3 -m venv /tmp/rayvenv && /tmp/rayvenv/bin/pip install 'ray==2.60.*'
    .venv/bin/python benchmarks/dispatch.py --ray-python /tmp/rayvenv/bin/python

Ray keeps task state in memory (nothing here is durable), so this is the
figure to beat while testfleet commits every state change to DuckDB. Prints
one line: ``ray <version>: <tasks/s> tasks/s``.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")

    @ray.remote
    def noop() -> None:
        return None

    ray.get([noop.remote() for _ in range(200)])  # start the worker processes first
    started = time.perf_counter()
    ray.get([noop.remote() for _ in range(args.tasks)])
    elapsed = time.perf_counter() - started
    print(f"ray {ray.__version__}: {args.tasks / elapsed:,.0f} tasks/s ({args.tasks} no-op tasks)")
    ray.shutdown()


if __name__ == "__main__":
    main()
