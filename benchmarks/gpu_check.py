"""The whole benchmark path on a machine with an NVIDIA GPU, checked.

Run on the GPU machine, from the repository root:

    HF_HUB_OFFLINE=1 python benchmarks/gpu_check.py [--out DIR]

It starts a coordinator and a worker on that machine (loopback, a fresh DuckDB
file), submits bert-base-uncased at fp16 on CUDA over batch sizes 1 to 256 and
again with ``batch_sizes: "auto"``, prints the results table, and checks that:

* both tasks completed on the GPU (hardware ``cuda``, a real device name) and
  their results say ``is_simulated: false``;
* NVML metrics were sampled while they ran (non-zero GPU utilisation and power);
* every measured batch size has throughput > 0 and p99 >= p50;
* the auto search reports an optimal batch size among the sizes it measured.

Then the other backends on the GPU, each where present and otherwise reported
as absent with why (never a failure, never run another way):

* ONNX Runtime's CUDA execution provider (``onnxruntime-gpu``): bert at fp32
  over batch sizes 1, 8, 64 with ``backend: onnxruntime``,
  ``provider: CUDAExecutionProvider``; checked like torch's (completed, not
  simulated, sane figures) and its output check against torch passed;
* WebGPU in Chromium: with testfleet's browser backend and a Chromium on PATH,
  the same with ``backend: browser``, ``backend_device: webgpu``.

``--probe-only`` prints what is present and exits (runs anywhere, no fleet).

Then it runs ``benchmarks/fidelity.py`` on CUDA at fp16 (plain torch loop vs
testfleet, interleaved rounds) and prints that table too. It exits non-zero if a
check fails. Copies of everything it printed, the results as JSON and the logs
go to ``--out`` (``$OUT`` when set, as on the lent GPU machine).

On a machine whose Python lacks testfleet's own dependencies (the lent H200 has
torch, transformers, nvidia-ml-py, psutil, msgpack and httpx), install them
from wheels first; see the README's GPU section.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


CUDA_PROVIDER = "CUDAExecutionProvider"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def onnxruntime_cuda_absent(providers: list[str] | None = None) -> str | None:
    """Why ONNX Runtime's CUDA provider cannot run here (None: it can).

    ``providers`` is for tests; by default ONNX Runtime's own list. Only the
    import is tried, nothing runs on the GPU.
    """
    if providers is None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install onnxruntime-gpu)"
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    if CUDA_PROVIDER not in providers:
        return (
            f"onnxruntime offers {', '.join(providers) or 'no providers'}, not "
            f"{CUDA_PROVIDER} (install onnxruntime-gpu)"
        )
    return None


def webgpu_absent(which: Any = shutil.which) -> str | None:
    """Why WebGPU in Chromium cannot be benchmarked here (None: it can be tried)."""
    sys.path.insert(0, str(ROOT / "src"))
    from testfleet.domain.benchmark import BenchmarkBackend
    from testfleet.worker.benchmarking.backends import BACKENDS

    if BenchmarkBackend.BROWSER not in BACKENDS:
        return "this testfleet has no browser benchmark backend"
    if not any(which(name) for name in CHROMIUM_NAMES):
        return f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)})"
    return None


def backend_tasks(iterations: int) -> dict[str, tuple[dict[str, Any] | None, str | None]]:
    """Each GPU backend: its task, or None and why it is absent."""
    base = {"model": "bert-base-uncased", "precision": "fp32", "iterations": iterations,
            "warmup": 10, "sequence_length": 128, "batch_sizes": [1, 8, 64]}  # fmt: skip
    wanted = {
        "onnxruntime-cuda": (
            {"backend": "onnxruntime", "provider": CUDA_PROVIDER},
            onnxruntime_cuda_absent(),
        ),
        "browser-webgpu": ({"backend": "browser", "backend_device": "webgpu"}, webgpu_absent()),
    }
    tasks: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
    for name, (fields, absent) in wanted.items():
        task = {"task_id": f"gpu-bert-{name}", "type": "benchmark",
                "requirements": {"hardware": ["cuda"] if name == "onnxruntime-cuda" else []},
                "config": {**base, **fields}, "timeout_seconds": 3000}  # fmt: skip
        tasks[name] = (None, absent) if absent is not None else (task, None)
    return tasks


def say(line: str, log: list[str]) -> None:
    print(line, flush=True)
    log.append(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or tempfile.mkdtemp())
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--skip-fidelity", action="store_true")
    parser.add_argument(
        "--probe-only", action="store_true", help="print which GPU backends are present and exit"
    )
    args = parser.parse_args()
    if args.probe_only:
        for name, (_, absent) in backend_tasks(args.iterations).items():
            print(f"{name}: {'present' if absent is None else 'absent: ' + absent}")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT / "src"))
    from testfleet.local_fleet import LocalFleet, LocalFleetError, WorkerOptions

    log: list[str] = []
    failures: list[str] = []
    pythonpath = os.pathsep.join([str(ROOT / "src"), *sys.path])
    env = dict(os.environ, PYTHONPATH=pythonpath)
    fleet = LocalFleet(
        out,
        db=out / "gpu.duckdb",
        log_dir=out,
        work_dir=out / "work",
        env={"PYTHONPATH": pythonpath},
        client_timeout=120,
    )
    url = fleet.url
    client = fleet.client
    try:
        fleet.start_coordinator(timeout=60)
        # The worker probes torch (as the `testfleet worker` default does) for what it sees.
        fleet.start_worker(
            "gpu-worker",
            WorkerOptions(probe_torch=True, work_dir=out / "work"),
            name="worker",
            wait=False,
        )
        try:
            fleet.wait_for_workers(["gpu-worker"], timeout=180)
        except LocalFleetError as exc:
            raise SystemExit(f"the worker did not connect; see worker.log\n{exc}") from None
        worker = client.workers()[0]
        say(f"worker: hardware {worker['hardware']}, gpus "
            f"{[g['name'] for g in worker['capabilities']['gpus']]}", log)  # fmt: skip
        if "cuda" not in worker["hardware"]:
            failures.append("the worker does not report cuda")

        base = {"model": "bert-base-uncased", "precision": "fp16", "iterations": args.iterations,
                "warmup": 10, "sequence_length": 128}  # fmt: skip
        tasks = [
            {"task_id": "gpu-bert-fp16", "type": "benchmark",
             "requirements": {"hardware": ["cuda"]},
             "config": {**base, "batch_sizes": SIZES}, "timeout_seconds": 3000},
            {"task_id": "gpu-bert-fp16-auto", "type": "benchmark",
             "requirements": {"hardware": ["cuda"]},
             "config": {**base, "batch_sizes": "auto", "max_batch_size": 4096},
             "timeout_seconds": 3000},
        ]  # fmt: skip
        client.submit(tasks)
        results: dict[str, Any] = {}
        for task in tasks:
            task_id = str(task["task_id"])
            while True:
                detail = client.get_task(task_id)
                if detail["task"]["status"] not in ("queued", "assigned", "running"):
                    break
                time.sleep(1)
            results[task_id] = detail
            check_result(task_id, detail, failures, log)
        for name, (backend_task, absent) in backend_tasks(args.iterations).items():
            if backend_task is None:
                say(f"{name}: absent: {absent}", log)
                continue
            client.submit([backend_task])
            task_id = str(backend_task["task_id"])
            while True:
                detail = client.get_task(task_id)
                if detail["task"]["status"] not in ("queued", "assigned", "running"):
                    break
                time.sleep(1)
            results[task_id] = detail
            check_backend_result(task_id, detail, failures, log)
        env["TESTFLEET_TOKEN"] = fleet.token  # the fleet's admin token, for the CLI
        compared = subprocess.run(
            [sys.executable, "-m", "testfleet", "results", "compare", "--model",
             "bert-base-uncased", "--coordinator", url],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        say(compared.stdout, log)
        (out / "gpu_results.json").write_text(json.dumps(results, indent=2))
    finally:
        try:
            fleet.stop_all(grace=60)
        finally:
            fleet.close()

    if not args.skip_fidelity:
        fidelity = subprocess.run(
            [sys.executable, str(HERE.parent / "fidelity.py"), "--device", "cuda",
             "--precision", "fp16", "--batch-sizes", "1,8,64", "--sequence-length", "128",
             "--iterations", "100", "--threads", "0", "--rounds", "3"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        say(fidelity.stdout + fidelity.stderr[-2000:], log)
        if "NOT within" in fidelity.stdout or fidelity.returncode != 0:
            failures.append("fidelity: not within 5 % (see above)")

    for failure in failures:
        say(f"CHECK FAILED: {failure}", log)
    say("gpu_check: all checks passed" if not failures else "gpu_check: FAILED", log)
    (out / "gpu_check.txt").write_text("\n".join(log))
    return 1 if failures else 0


def check_backend_result(
    task_id: str, detail: dict[str, Any], failures: list[str], log: list[str]
) -> None:
    """A backend's GPU task: completed, not simulated, sane figures, its output check passed."""
    task, result = detail["task"], detail["result"]
    if task["status"] != "completed" or result is None:
        failures.append(f"{task_id}: {task['status']} {task.get('error')}")
        return
    outcome = result["results"]
    check = outcome.get("output_check")
    say(f"{task_id}: {outcome['device']} on {outcome['device_name']}; output check {check}; "
        + ", ".join(f"batch {size} p50 {m['latency_p50_ms']:.2f} ms "
                    f"{m['throughput_items_per_second']:.0f} items/s"
                    for size, m in outcome["batch_sizes"].items()), log)  # fmt: skip
    if result["simulation_status"]["is_simulated"]:
        failures.append(f"{task_id}: reported as simulated")
    if check is None or not check["passed"]:
        failures.append(f"{task_id}: the output check did not pass: {check}")
    for size, m in outcome["batch_sizes"].items():
        if not m["throughput_items_per_second"] > 0 or m["latency_p99_ms"] < m["latency_p50_ms"]:
            failures.append(f"{task_id}: batch {size} figures are not sane: {m}")


def check_result(task_id: str, detail: dict[str, Any], failures: list[str], log: list[str]) -> None:
    task, result = detail["task"], detail["result"]
    if task["status"] != "completed" or result is None:
        failures.append(f"{task_id}: {task['status']} {task.get('error')}")
        return
    outcome, metrics = result["results"], result["hardware_metrics"]
    say(f"{task_id}: {outcome['device_name']} {outcome['precision']}, optimal batch size "
        f"{outcome['optimal_batch_size']}; gpu util {metrics.get('gpu_utilization_percent')} %, "
        f"power {metrics.get('power_consumption_watts')} W, memory "
        f"{metrics.get('memory_usage_mb')} MB", log)  # fmt: skip
    if outcome["hardware"] != "cuda":
        failures.append(f"{task_id}: ran on {outcome['hardware']}, not cuda")
    if result["simulation_status"]["is_simulated"]:
        failures.append(f"{task_id}: reported as simulated")
    for key in ("gpu_utilization_percent", "power_consumption_watts"):
        if not metrics.get(key):
            failures.append(f"{task_id}: NVML {key} was not sampled (got {metrics.get(key)})")
    for size, m in outcome["batch_sizes"].items():
        if not m["throughput_items_per_second"] > 0 or m["latency_p99_ms"] < m["latency_p50_ms"]:
            failures.append(f"{task_id}: batch {size} figures are not sane: {m}")
    if outcome["auto_batch_size"] and outcome["optimal_batch_size"] is None:
        failures.append(f"{task_id}: auto search reported no optimal batch size")
    for size, error in outcome["errors"].items():
        say(f"  batch {size}: {error['error_class']}: {error['message'][:200]}", log)


if __name__ == "__main__":
    sys.exit(main())
