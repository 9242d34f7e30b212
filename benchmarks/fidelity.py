"""Fidelity: does the latency testfleet reports match a plain torch timing loop?

Run:  .venv/bin/python benchmarks/fidelity.py [--model bert-base-uncased]
        [--batch-sizes 1,4,8] [--sequence-length 64] [--iterations 30]
        [--precision fp32] [--device cpu] [--overrides '{"num_hidden_layers": 2}']

In one run it measures the same model, inputs and batch sizes both ways, in
interleaved rounds (plain, testfleet, plain, ..., plain):

* a plain loop in a fresh Python process: ``warmup`` forward passes, then
  ``iterations`` passes each timed with ``time.perf_counter`` between device
  synchronisations, under ``torch.inference_mode()`` — the textbook loop;
* through testfleet: a coordinator and a worker on loopback, a
  ``type: benchmark`` task submitted over REST, the mean latency read from the
  result it reports.

It prints every round's mean latency and, for each testfleet round, its
difference from the mean of the plain rounds on either side of it (the
machine's drift over minutes cancels out of these pairs); the verdict is on the
median paired difference per batch size, within ``--tolerance`` (5 % by
default). The model is built the way the worker builds it (same
configuration, same seed, same inputs); the timing code here is independent.
Nothing is asserted: figures go in the README.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def plain_loop(request: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean and median latency in ms per batch size, timed by a plain loop (in a child)."""
    import torch

    from testfleet.domain.benchmark import BenchmarkConfig
    from testfleet.domain.enums import HardwareKind
    from testfleet.worker.benchmarking.accelerator import open_device
    from testfleet.worker.benchmarking.inputs import make_inputs, plan_inputs
    from testfleet.worker.benchmarking.models import load_model
    from testfleet.worker.benchmarking.precision import apply_precision, float_dtype

    config = BenchmarkConfig.model_validate(request["config"])
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    accelerator = open_device(HardwareKind(request["device"]))
    loaded = load_model(config)
    model = apply_precision(loaded.model, config.precision, accelerator).eval()
    plan = plan_inputs(loaded, config)
    device = accelerator.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    figures: dict[str, dict[str, float]] = {}
    assert isinstance(config.batch_sizes, list)
    with torch.inference_mode():
        for batch_size in config.batch_sizes:
            inputs = make_inputs(
                plan, batch_size, device=device, float_dtype=float_dtype(config.precision)
            )
            for _ in range(config.warmup):
                model(**inputs)
            sync()
            samples = []
            for _ in range(config.iterations):
                sync()
                started = time.perf_counter()
                model(**inputs)
                sync()
                samples.append((time.perf_counter() - started) * 1000)
            figures[str(batch_size)] = {
                "mean": statistics.fmean(samples),
                "median": statistics.median(samples),
            }
    return figures


def pinned(core: int | None) -> list[str]:
    """A ``taskset`` prefix that keeps a process on one core (nothing if not pinning)."""
    return [] if core is None else ["taskset", "-c", str(core)]


def beside(core: int) -> set[int]:
    """Every core this process may use but ``core``: where the rest of a pinned run lives."""
    return set(os.sched_getaffinity(0)) - {core} or {core}


def keep_beside(pid: int, core: int) -> None:
    """Move every thread of process ``pid`` (the worker) and of the processes it
    has started so far off ``core``.

    The worker is started on ``core`` alone, so it detects that one core as what
    it may give tasks and pins its runner there (the task asks for one core);
    then its agent (the event loop that heartbeats, relays the runner's metrics
    and talks to the coordinator) moves beside it, as it would sit on any
    machine with more than one core. Before, the agent shared the measured core
    with the runner in testfleet's rounds and not in the plain ones: an
    asymmetry between the two sides, though not (measured 2026-12-07) the cause
    of ONNX Runtime's batch-1 bias. The processes the worker started at start-up
    (its orphan guard, a spare pytest session) inherited ``core`` and move too,
    though they idle. Threads and processes the agent starts later inherit its
    new affinity; the runner is pinned to ``core`` by the worker itself.
    """
    import psutil

    processes = [psutil.Process(pid)]
    with contextlib.suppress(psutil.NoSuchProcess):
        processes += processes[0].children(recursive=True)
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, FileNotFoundError):
            for thread in Path(f"/proc/{process.pid}/task").iterdir():
                with contextlib.suppress(ProcessLookupError):
                    os.sched_setaffinity(int(thread.name), beside(core))


def plain_environment() -> dict[str, str]:
    """The plain loop's environment: offline, and glibc keeping freed memory.

    The runner tells glibc the same with ``mallopt`` at its start
    (``worker/benchmarking/allocator.py``); here it is glibc's own environment
    variables, so the plain loop stays free of testfleet's code. Without it the
    two processes' allocators reached different states (one re-faulting its
    activations from the kernel every iteration, the other not), which was the
    signed bias issue 15 found.
    """
    from testfleet.worker.benchmarking.allocator import GLIBC_ENVIRONMENT

    return {**os.environ, "HF_HUB_OFFLINE": "1", **GLIBC_ENVIRONMENT}


def run_plain(request: dict[str, Any], core: int | None) -> dict[str, dict[str, float]]:
    completed = subprocess.run(
        [*pinned(core), sys.executable, str(HERE), "--plain-child"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
        env=plain_environment(),
        # In a session of its own, as the worker starts its runner: with the
        # kernel's autogroup scheduling each session shares the CPU as one
        # group, and a plain child left in the caller's session would share
        # its group's slice with whatever else that session runs.
        start_new_session=True,
    )
    result: dict[str, dict[str, float]] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


class Fleet:
    """A coordinator and one worker on loopback, kept up across rounds."""

    def __init__(
        self, workdir: Path, measure_core: int | None, *, probe_backends: bool = False
    ) -> None:
        from testfleet.local_fleet import CoordinatorOptions, LocalFleet, WorkerOptions

        self.local = LocalFleet(
            workdir,
            db=workdir / "fidelity.duckdb",
            log_dir=workdir,
            env={"HF_HUB_OFFLINE": "1"},
        )
        if measure_core is not None:
            # This script's own polling stays off the measured core as well.
            os.sched_setaffinity(0, beside(measure_core))
        try:
            self.local.start_coordinator(
                CoordinatorOptions(prefix=pinned(0 if measure_core else None)), timeout=30
            )
            # The worker probes torch, as any worker that runs benchmarks does;
            # it measures on ``measure_core`` when pinned.
            worker = self.local.start_worker(
                "fidelity-worker",
                WorkerOptions(
                    probe_torch=True,
                    # backends.py's tasks on ONNX Runtime, OpenVINO or a browser
                    # are placed only on a worker that detected that backend.
                    probe_backends=probe_backends,
                    work_dir=workdir / "work",
                    prefix=pinned(measure_core),
                ),
                name="worker",
                wait=False,
            )
            self.local.wait_for_workers(["fidelity-worker"], timeout=120)
            if measure_core is not None:
                keep_beside(worker.pid, measure_core)
        except BaseException:
            self.close()
            raise
        self.client = self.local.client
        self.measure_core = measure_core
        self.rounds = 0

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Submit the benchmark as a task and return the result it reports."""
        self.rounds += 1
        task_id = f"fidelity-{self.rounds}"
        self.client.submit(
            [
                {
                    "task_id": task_id,
                    "type": "benchmark",
                    "requirements": {
                        "hardware": [request["device"]],
                        # Pinned: the worker pins its runner to the measured
                        # core (the one core it started with), its agent beside.
                        **(
                            {"resources": {"cpu_cores": 1}} if self.measure_core is not None else {}
                        ),
                    },
                    "config": request["config"],
                    "timeout_seconds": 3600,
                }
            ]
        )
        while True:
            detail = self.client.get_task(task_id)
            if detail["task"]["status"] not in ("queued", "assigned", "running"):
                break
            time.sleep(0.5)
        if detail["result"] is None or detail["task"]["status"] != "completed":
            raise SystemExit(f"the benchmark task did not complete: {detail['task']}")
        result: dict[str, Any] = detail["result"]
        return result

    def close(self) -> None:
        try:
            self.local.stop_all(grace=30)
        finally:
            self.local.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bert-base-uncased")
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overrides", default="{}", help="config_overrides as JSON")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=3, help="testfleet rounds (plain: one more)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the measuring processes to the last core and the coordinator to core 0",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in the plain loop and on the worker alike (0: torch's default). "
        "On a small shared machine one thread keeps the idle coordinator and worker from "
        "competing with the measurement for the same cores.",
    )
    parser.add_argument("--plain-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_child:
        print(json.dumps(plain_loop(json.loads(sys.stdin.read()))))
        return

    request = {
        "device": args.device,
        "config": {
            "model": args.model,
            "batch_sizes": [int(size) for size in args.batch_sizes.split(",")],
            "precision": args.precision,
            "iterations": args.iterations,
            "warmup": args.warmup,
            "sequence_length": args.sequence_length,
            "config_overrides": json.loads(args.overrides),
            **({"threads": args.threads} if args.threads else {}),
        },
    }
    workdir = Path(tempfile.mkdtemp(prefix="testfleet-fidelity-"))
    sizes = [str(size) for size in request["config"]["batch_sizes"]]
    # Interleaved rounds (plain, testfleet, plain, ..., plain): drift in the
    # machine's speed hits both sides alike, and medians over rounds damp it.
    # With --pin, the measuring processes (the plain loop; the worker and so its
    # benchmark child) share one core and the coordinator keeps to another.
    core = (os.cpu_count() or 1) - 1 if args.pin and (os.cpu_count() or 1) > 1 else None
    plain_rounds = [run_plain(request, core)]
    fleet_rounds = []
    fleet = Fleet(workdir, core)
    try:
        for _ in range(args.rounds):
            fleet_rounds.append(fleet.run(request))
            plain_rounds.append(run_plain(request, core))
    finally:
        fleet.close()

    device_name = fleet_rounds[0]["results"]["device_name"]
    print(
        f"fidelity: {args.model} ({args.precision}, {args.device}, sequence "
        f"{args.sequence_length}, {args.iterations} iterations after {args.warmup} warmup) on "
        f"{device_name}; torch threads {args.threads or 'default'} on both sides"
        + (f", measuring on core {core}" if core is not None else "")
    )
    print(
        f"  {args.rounds} testfleet rounds between {len(plain_rounds)} plain-loop rounds; "
        "mean latency per round, ms"
    )
    worst = 0.0
    for size in sizes:
        plain = [r[size]["mean"] for r in plain_rounds]
        reported = [r["results"]["batch_sizes"][size]["latency_ms"] for r in fleet_rounds]
        # Each testfleet round against the plain rounds just before and after it:
        # the machine's drift over minutes cancels out of these paired ratios.
        paired = [value / ((plain[i] + plain[i + 1]) / 2) - 1 for i, value in enumerate(reported)]
        difference = statistics.median(paired)
        worst = max(worst, abs(difference))
        print(
            f"  batch {size:>4}: plain {' '.join(f'{v:.1f}' for v in plain)}"
            f" | testfleet {' '.join(f'{v:.1f}' for v in reported)}"
            f" | paired differences {' '.join(f'{d:+.1%}' for d in paired)}"
            f" | median {difference:+.1%}"
        )
    verdict = "within" if worst <= args.tolerance else "NOT within"
    print(
        f"  largest median paired difference {worst:.1%}: testfleet's reported latency is "
        f"{verdict} {args.tolerance:.0%} of the plain loop"
    )


if __name__ == "__main__":
    main()
