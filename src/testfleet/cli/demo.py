"""``testfleet demo``: a whole fleet on this machine, in one command.

Starts a coordinator on loopback with its own DuckDB file and a few worker
processes, submits an example batch (real commands of mixed priorities, a
command that fails and is retried, one that times out, simulated load, a task
pinned to a rack by tag, and one that needs hardware this machine lacks),
shows live progress, prints a summary, then runs a small pytest suite across
the same workers with ``testfleet run`` (pytest's own output and summary), and
shuts everything down cleanly, leaving the DuckDB file for inspection.

Secure as a real fleet, and still one command: the demo makes its own CA,
server and worker certificates (``<output>/pki``) and admin token
(``<output>/admin.token``), runs everything over TLS on loopback with worker
certificates (``LocalFleet(tls=True)``), and prints the ``https://`` address,
CA and token file to use from another shell while it runs.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from testfleet.cli.tables import shown_status, tasks_table
from testfleet.client import CA_ENV, COORDINATOR_ENV, FleetClient
from testfleet.domain.benchmark import BenchmarkBackend, load_note
from testfleet.domain.enums import HardwareKind, TaskStatus
from testfleet.local_fleet import CoordinatorOptions, LocalFleet, LocalFleetError, WorkerOptions
from testfleet.security.credentials import TOKEN_ENV, TOKEN_FILE_ENV
from testfleet.security.pki import ca_files, server_files
from testfleet.worker.hardware import detect_capabilities

DEFAULT_DEMO_DB = Path("demo-output/testfleet-demo.duckdb")
#: The demo gives up waiting after this long (its tasks take a few seconds).
DEMO_DEADLINE_SECONDS = 180.0
#: How long each process may take to stop cleanly before it is killed.
STOP_GRACE_SECONDS = 10.0


def missing_hardware() -> HardwareKind:
    """A kind of accelerator this machine does not have, for the unschedulable example."""
    present = set(detect_capabilities(tags={}, task_types=[], probe_torch=False).hardware)
    for kind in (HardwareKind.CUDA, HardwareKind.ROCM, HardwareKind.MPS, HardwareKind.QNN):
        if kind not in present:
            return kind
    return HardwareKind.WEBNN


def benchmarks_available() -> bool:
    """Whether this machine's workers can run model benchmarks (torch and transformers)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


def example_batch(missing: HardwareKind) -> list[dict[str, Any]]:
    """Real commands, simulated load and edge cases, as task documents (docs/formats.md)."""
    python = sys.executable
    batch: list[dict[str, Any]] = []
    for n in range(6):
        batch.append(
            {
                "task_id": f"demo-sha256-{n}",
                "type": "command",
                "priority": 1 if n < 2 else 5,
                "config": {
                    "argv": [
                        python,
                        "-c",
                        "import hashlib,sys; d=b'x'*(1<<20); h=hashlib.sha256()\n"
                        f"for _ in range({40 + 20 * n}): h.update(d)\n"
                        "print(h.hexdigest())",
                    ]
                },
                "timeout_seconds": 60,
            }
        )
    batch.append(
        {
            "task_id": "demo-python-version",
            "type": "command",
            "priority": 3,
            "config": {"argv": [python, "--version"]},
        }
    )
    batch.append(
        {
            "task_id": "demo-rack-b-only",
            "type": "command",
            "priority": 2,
            "requirements": {"tags": {"rack": "b"}},
            "config": {"argv": [python, "-c", "import platform; print(platform.node())"]},
        }
    )
    batch.append(
        {
            "task_id": "demo-fails-then-gives-up",
            "type": "command",
            "priority": 4,
            "config": {
                "argv": [python, "-c", "import sys; print('failing on purpose'); sys.exit(3)"]
            },
            "retry_policy": {"max_retries": 1, "retry_delay_seconds": 0.5},
        }
    )
    batch.append(
        {
            "task_id": "demo-times-out",
            "type": "command",
            "priority": 4,
            "config": {"argv": [python, "-c", "import time; time.sleep(60)"]},
            "timeout_seconds": 1.5,
        }
    )
    for n in range(10):
        batch.append(
            {
                "task_id": f"demo-simulated-{n}",
                "type": "simulated",
                "priority": 9,
                "config": {
                    "sampled_duration": {
                        "distribution": "lognormal",
                        "median_seconds": 0.3,
                        "sigma": 0.5,
                        "max_seconds": 2,
                    },
                    "seed": n,
                },
            }
        )
    batch.append(
        {
            "task_id": f"demo-needs-{missing.value}",
            "type": "command",
            "priority": 1,
            "requirements": {"hardware": [missing.value], "min_memory_gb": 8},
            "config": {"argv": [python, "-c", "print('never runs here')"]},
        }
    )
    return batch


def benchmark_task() -> dict[str, Any]:
    """A real model benchmark: BERT's architecture with two layers, random weights
    built from its configuration (nothing is downloaded), on the CPU.

    The demo submits it on its own once the batch has settled: its workers
    share this machine, and figures timed while the other tasks keep the CPU
    busy would say more about them than about the model.
    """
    return {
        "task_id": "demo-bench-bert-2-layers",
        "type": "benchmark",
        "priority": 2,
        "config": {
            "model": "bert-base-uncased",
            "batch_sizes": [1, 4, 16],
            "iterations": 10,
            "warmup": 2,
            "sequence_length": 64,
            "config_overrides": {"num_hidden_layers": 2},
        },
        "timeout_seconds": 300,
    }


#: The backends the demo compares with torch, and the library each needs (issue 15).
DEMO_BACKENDS = {BenchmarkBackend.ONNXRUNTIME: "onnxruntime", BenchmarkBackend.OPENVINO: "openvino"}


def demo_backends() -> list[BenchmarkBackend]:
    """The backends this machine can compare with torch in the demo: testfleet has the
    backend and its library is installed. (The browser backend is left out: starting
    Chromium is not cheap enough for the demo.)"""
    from testfleet.worker.benchmarking.backends import BACKENDS

    return [
        kind
        for kind, library in DEMO_BACKENDS.items()
        if kind in BACKENDS and importlib.util.find_spec(library) is not None
    ]


def backend_task(kind: BenchmarkBackend) -> dict[str, Any]:
    """The demo's benchmark (:func:`benchmark_task`) on another backend, CPU: the same
    model, weights, inputs and sweep, so ``results compare`` puts them side by side."""
    task = benchmark_task()
    fields: dict[str, Any] = {"backend": kind.value}
    if kind is BenchmarkBackend.OPENVINO:
        fields["backend_device"] = "CPU"
    elif kind is BenchmarkBackend.ONNXRUNTIME:
        fields["provider"] = "CPUExecutionProvider"
    return {
        **task,
        "task_id": f"{task['task_id']}-{kind.value}",
        "config": {**task["config"], **fields},
    }


def _settled(tasks: list[dict[str, Any]]) -> bool:
    """Every task finished, or waits with a reason (unschedulable)."""
    return all(
        TaskStatus(t["status"]).is_terminal or shown_status(t) == "unschedulable" for t in tasks
    )


def run_demo(db: Path, workers: int, slots: int, console: Console) -> int:
    """Run the demo; returns the process exit code (0 when it ran as intended)."""
    if db.exists():
        if db.resolve() != DEFAULT_DEMO_DB.resolve():
            console.print(f"[red]error:[/red] {db} exists; pick a new --db (the demo starts fresh)")
            return 2
        db.unlink()
        Path(str(db) + ".wal").unlink(missing_ok=True)
    db.parent.mkdir(parents=True, exist_ok=True)
    logs = db.parent / "logs"
    fleet = LocalFleet(db.parent, db=db, log_dir=logs, work_dir=db.parent / "work", tls=True)
    assert fleet.pki is not None  # tls=True made it
    ca = _shown(ca_files(fleet.pki).cert)
    console.print(
        f"[bold]testfleet demo[/bold]: coordinator on {fleet.url} (TLS, worker certificates "
        f"from {ca}), DuckDB file {db}",
        soft_wrap=True,
    )
    try:
        try:
            fleet.start_coordinator(
                CoordinatorOptions(heartbeat_interval=0.5, heartbeat_timeout=5), timeout=30
            )
        except LocalFleetError:
            console.print(
                f"[red]the coordinator did not start; see {logs / 'coordinator.log'}[/red]"
            )
            return 1
        worker_ids = [f"demo-worker-{n}" for n in range(1, workers + 1)]
        for n, worker_id in enumerate(worker_ids, start=1):
            rack = "b" if n == workers else "a"
            # One work directory for all: they share this machine's caches.
            # The first worker detects its benchmark backends (ONNX Runtime,
            # OpenVINO, a browser): a benchmark on another backend than torch is
            # only placed where detection found it, and one detecting worker is
            # enough for the comparison (each probe is a child process of its own).
            options = WorkerOptions(
                slots=slots,
                tags={"rack": rack},
                work_dir=fleet.work_dir,
                probe_backends=n == 1,
            )
            fleet.start_worker(worker_id, options, name=f"worker-{n}", wait=False)
        try:
            fleet.wait_for_workers(worker_ids, timeout=60)
        except LocalFleetError:
            console.print(f"[red]workers did not connect; see {logs}[/red]")
            return 1
        console.print(f"{workers} workers connected, {slots} slot(s) each (the last on rack=b)")
        console.print(
            "from another shell while the demo runs:\n  "
            + _client_env(fleet.url, ca, _shown(fleet.token_file))
            + " testfleet tasks",
            soft_wrap=True,
            highlight=False,
        )

        client = fleet.client
        batch = example_batch(missing_hardware())
        ids = client.submit(batch)
        console.print(f"submitted {len(ids)} tasks")
        tasks = _follow(client, len(ids), console)
        console.print(tasks_table(tasks, title="demo summary"))
        _explain(tasks, console)
        if benchmarks_available():
            _run_benchmark(client, console)
            _run_backends(client, console)
        _run_suite(
            fleet.url, fleet.token, ca_files(fleet.pki).cert, db.parent / "demo-suite", console
        )
    finally:
        try:
            fleet.stop_all(grace=STOP_GRACE_SECONDS)
        finally:
            fleet.close()
    server = server_files(fleet.pki)
    token_file = _shown(fleet.token_file)
    console.print(
        f"fleet stopped cleanly; every task, attempt and result is in [bold]{db}[/bold] "
        f"(logs in {logs}). Inspect it over TLS, as the demo ran:\n"
        f"  testfleet coordinator --db {db} --tls-cert {_shown(server.cert)} "
        f"--tls-key {_shown(server.key)} --client-ca {ca} &\n"
        f"  {_client_env('https://127.0.0.1:8700', ca, token_file)} testfleet tasks",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        f"the coordinator needs a token: the demo's admin token is in {token_file} "
        f"(mode 600); use it with\n  export {TOKEN_ENV}=$(cat {token_file})\n"
        f"or pass --token-file {token_file} to any command; {CA_ENV}={ca} (or --ca) "
        "verifies the coordinator's certificate",
        soft_wrap=True,
        highlight=False,
    )
    return 0


def _client_env(url: str, ca: Path, token_file: Path) -> str:
    """The environment a client command needs for the demo's fleet, as shell words."""
    return f"{COORDINATOR_ENV}={url} {CA_ENV}={ca} {TOKEN_FILE_ENV}={token_file}"


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it is below it (shorter to
    copy, and true from the shell the demo ran in), else as is."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


#: The demo's pytest suite: 35 tests over three modules, one failing and one
#: skipped on purpose, so the summary shows more than "passed".
DEMO_SUITE = {
    # Its own rootdir: pytest would otherwise look above it for a config file.
    "pytest.ini": "[pytest]\n",
    "tests/test_arithmetic.py": """
import time
import pytest

@pytest.mark.parametrize("n", range(16))
def test_square_is_not_negative(n):
    time.sleep(0.02 * (n % 4))
    assert n * n >= 0

def test_deliberately_wrong():
    assert sum([0.1] * 3) == 0.3  # floats: fails on purpose
""",
    "tests/test_strings.py": """
import pytest

@pytest.mark.parametrize("word", ["fleet", "worker", "coordinator", "duckdb"] * 4)
def test_upper_round_trips(word):
    assert word.upper().lower() == word

@pytest.mark.skip(reason="shows a skip in the summary")
def test_skipped():
    pass
""",
    "tests/test_slow.py": """
import time

def test_takes_half_a_second():
    time.sleep(0.5)
""",
}


def _run_suite(url: str, token: str, ca: Path, root: Path, console: Console) -> None:
    """Run DEMO_SUITE with ``testfleet run`` on the demo's fleet, output as is.

    The suite needs no installed pytest plugin, so it runs with none: plugin
    autoloading off and the fleet's own plugin named with ``-p``. The demo
    runs in whatever environment testfleet is installed in (a development
    one has pytest-asyncio, which warns about its unset loop scope), and a
    serial ``pytest`` with these settings sees exactly what the run sees;
    the workers' sessions load the plugins this run's pytest loaded and no
    others (``TestConfig.plugins``), so they see the same.
    """
    for name, text in DEMO_SUITE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip())
    console.print(
        f"\n[bold]testfleet run[/bold]: a 35-test pytest suite ({root}) across the same workers"
    )
    sys.stdout.flush()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "testfleet",
            "run",
            "--coordinator",
            url,
            "tests",
            "-p",
            "testfleet",
            "-p",
            "no:cacheprovider",
            "-rfs",
        ],
        cwd=root,
        env={
            **os.environ,
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            TOKEN_ENV: token,
            CA_ENV: str(ca),
        },
        stdin=subprocess.DEVNULL,
        check=False,
    )
    console.print(
        f"testfleet run exited {done.returncode} (pytest's code: 1 = some tests failed, as "
        "intended); every test's outcome is in the test_results table"
    )


def _follow(client: FleetClient, total: int, console: Console) -> list[dict[str, Any]]:
    """Live progress until every task settled; returns the final task list."""
    columns = (
        TextColumn("[bold]tasks"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    deadline = time.monotonic() + DEMO_DEADLINE_SECONDS
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("tasks", total=total, detail="")
        while True:
            stats = client.stats()
            counts = stats["tasks"]
            finished = sum(counts[s.value] for s in TaskStatus if s.is_terminal)
            unschedulable = sum(item["tasks"] for item in stats["unschedulable"])
            # The same categories as the summary's counts (see _explain).
            detail = (
                f"running {counts['running'] + counts['assigned']}"
                # Unschedulable tasks wait in the queue too: count each task once.
                f"  queued {stats['queue']['pending'] - unschedulable}"
                f"  failed {counts['failed']}  timed out {counts['timed_out']}"
                f"  unschedulable {unschedulable}"
                f"  slots busy {stats['slots']['busy']}/{stats['slots']['total']}"
            )
            progress.update(bar, completed=finished + unschedulable, detail=detail)
            if finished + unschedulable >= total:
                tasks: list[dict[str, Any]] = client.list_tasks(limit=total)["tasks"]
                if _settled(tasks):
                    return tasks
            if time.monotonic() > deadline:
                return list(client.list_tasks(limit=total)["tasks"])
            time.sleep(0.2)


def _run_benchmark(client: FleetClient, console: Console) -> None:
    """Submit the demo's benchmark alone, on the now quiet fleet, and show its figures."""
    task = benchmark_task()
    console.print(
        f"\nbenchmarking {task['config']['model']} (2 layers) on a quiet worker: "
        "the batch above has finished, so nothing else loads this machine"
    )
    if _run_alone(client, task, console):
        _print_benchmark(client, task["task_id"], console)


def _run_alone(client: FleetClient, task: dict[str, Any], console: Console) -> bool:
    """Submit one task and wait for its end; whether it completed (said if not)."""
    client.submit([task])
    deadline = time.monotonic() + DEMO_DEADLINE_SECONDS
    while True:
        found = client.get_task(task["task_id"])["task"]
        if TaskStatus(found["status"]).is_terminal or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if found["status"] != TaskStatus.COMPLETED.value:
        console.print(f"[red]{task['task_id']} ended {shown_status(found)}[/red]")
        return False
    return True


def _run_backends(client: FleetClient, console: Console) -> None:
    """The same benchmark on every other backend this machine has, one at a time on
    the quiet fleet, then ``results compare``'s backends table (issue 15)."""
    kinds = demo_backends()
    if not kinds:
        console.print("no other benchmark backend here (onnxruntime, openvino): no comparison")
        return
    console.print(
        f"the same model on {', '.join(k.value for k in kinds)} (CPU), one at a time, "
        "each output checked against torch's on the same weights"
    )
    for kind in kinds:
        _run_alone(client, backend_task(kind), console)
    # Imported here, by name: cli.results imports cli.app, which imports this module.
    results = importlib.import_module("testfleet.cli.results")
    document = client.benchmark_compare(str(benchmark_task()["config"]["model"]))
    if document["rows"]:
        console.print(results.backends_table(document))


def _print_benchmark(client: FleetClient, task_id: str, console: Console) -> None:
    """The measured figures of a completed benchmark task, per batch size, and the
    load the machine was under when it started (if it was busy)."""
    result = client.get_task(task_id)["result"]
    outcome = result["results"]
    table = Table(
        title=f"{task_id}: {outcome['model']} on {outcome['device_name']} ({outcome['precision']})",
        header_style="bold",
    )
    for column in ("batch", "latency ms (mean)", "p50", "p99", "items/s", "memory MB"):
        table.add_column(column, justify="right")
    for size, m in sorted(outcome["batch_sizes"].items(), key=lambda item: int(item[0])):
        table.add_row(
            size,
            f"{m['latency_ms']:.2f}",
            f"{m['latency_p50_ms']:.2f}",
            f"{m['latency_p99_ms']:.2f}",
            f"{m['throughput_items_per_second']:.1f}",
            f"{m['memory_mb']:.0f}",
        )
    console.print(table)
    note = load_note(outcome.get("conditions") or {})
    if note:
        console.print(f"[yellow]busy:[/yellow] {escape(note)}")


def _explain(tasks: list[dict[str, Any]], console: Console) -> None:
    by_status: dict[str, int] = {}
    for task in tasks:
        status = shown_status(task)
        by_status[status] = by_status.get(status, 0) + 1
    console.print("  ".join(f"{status}: {count}" for status, count in sorted(by_status.items())))
    for task in tasks:
        if shown_status(task) == "unschedulable":
            reason = task["unschedulable_reason"]
            console.print(
                f"[magenta]{task['task_id']}[/magenta] is unschedulable: {escape(reason)}"
            )
    simulated = [t for t in tasks if t["type"] == "simulated"]
    if simulated:
        console.print(
            f"{len(simulated)} simulated tasks report is_simulated: true in their results; "
            "the command tasks (and the benchmark below) are real runs."
        )
