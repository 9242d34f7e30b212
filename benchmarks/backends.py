"""Backends: one model, one batch-size sweep, every backend this machine has, in one run.

Run:  .venv/bin/python benchmarks/backends.py [--model bert-base-uncased]
        [--batch-sizes 1,4,8] [--sequence-length 32] [--iterations 30]
        [--overrides '{"num_hidden_layers": 2}'] [--rounds 1] [--pin]
        [--webgpu] [--webgpu-iterations 2]

For each backend (torch CPU, ONNX Runtime CPU, OpenVINO CPU, browser wasm,
browser WebGPU) it measures the same model, weights and inputs two ways, in
interleaved rounds (plain, testfleet, plain, ...):

* through testfleet: a ``type: benchmark`` task with that ``backend`` submitted
  over REST to a coordinator and worker on loopback; p50 latency, items/s and
  the output check (against torch, on the same weights) read from its result;
* a plain loop of that backend in a fresh process, with the backend's own API
  and no testfleet timing code: ``torch`` forward passes, an ONNX Runtime
  ``InferenceSession.run``, an OpenVINO infer request, each after ``warmup``
  untimed passes and timed with ``time.perf_counter`` (the model is built and
  exported the way the worker does, so both sides run the same graph, threads
  and allocator setting); for the browser, onnxruntime-web's own API in a page
  of its own in the same headless Chromium, timed with ``performance.now``
  inside the page (``browser_plain.py``).

The browser's wasm is measured wherever a Chromium, Playwright and
onnxruntime-web's files (``make browser-assets``) are found. Its WebGPU is
opt-in (``--webgpu``): headless Chromium without a GPU offers only
SwiftShader's software adapter, 10-15 s a run of a 2-layer BERT, so it runs
``--webgpu-iterations`` (2) timed runs after one warm-up, and its figure is
a software renderer's, not a GPU's.

It prints a table per backend and batch size: testfleet's and the plain
loop's p50, items/s, the median paired difference (each testfleet round
against the plain rounds either side of it; within ``--tolerance``, 5 %, is the
aim) and the output check. A backend this machine lacks is printed as absent,
with why, never measured another way. Nothing is asserted: figures go in the
README.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))  # fidelity.py beside it, run as a script or imported

from browser_plain import PlainBrowser  # noqa: E402
from fidelity import Fleet, pinned, plain_environment  # noqa: E402


@dataclass(frozen=True)
class BackendSpec:
    """One column of the comparison: a backend, and its device where it has one."""

    label: str
    backend: str
    backend_device: str | None = None
    provider: str | None = None

    def config_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"backend": self.backend}
        if self.backend_device is not None:
            fields["backend_device"] = self.backend_device
        if self.provider is not None:
            fields["provider"] = self.provider
        return fields


SPECS = [
    BackendSpec("torch CPU", "torch"),
    BackendSpec("ONNX Runtime CPU", "onnxruntime", provider="CPUExecutionProvider"),
    BackendSpec("OpenVINO CPU", "openvino", backend_device="CPU"),
    BackendSpec("browser wasm", "browser", backend_device="wasm"),
    BackendSpec("browser WebGPU", "browser", backend_device="webgpu"),
]


def absent_reason(spec: BackendSpec, *, webgpu: bool = False) -> str | None:
    """Why this machine cannot run ``spec`` (None: it can), without running a
    benchmark (``webgpu``: the run opted in to the browser's WebGPU)."""
    from testfleet.domain.benchmark import BenchmarkBackend
    from testfleet.worker.benchmarking.backends import BACKENDS

    kind = BenchmarkBackend(spec.backend)
    if kind is BenchmarkBackend.TORCH:
        return None if importlib.util.find_spec("torch") else "torch is not installed"
    if kind not in BACKENDS:
        return f"this testfleet has no {kind.value} benchmark backend"
    if kind is BenchmarkBackend.BROWSER:
        return browser_absent(spec, webgpu=webgpu)
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}[kind.value]
    return None if importlib.util.find_spec(module) else f"{module} is not installed"


def browser_absent(spec: BackendSpec, *, webgpu: bool) -> str | None:
    """Why the browser backend on ``spec.backend_device`` cannot run here.

    wasm needs a Chromium, Playwright and onnxruntime-web's files (``make
    browser-assets``). WebGPU is opt-in (``--webgpu``): headless Chromium on a
    machine without a GPU offers only SwiftShader's software adapter, 10-15 s
    per run of a 2-layer BERT, and a software figure says nothing about a GPU.
    Opted in, the worker's own probe is asked for an adapter (a Chromium start)
    so a machine with none reports why instead of queueing a task no worker
    takes.
    """
    from testfleet.worker import chromium
    from testfleet.worker.browser_assets import BrowserAssetsError, assets_dir

    if spec.backend_device == "webgpu" and not webgpu:
        return "opt-in (--webgpu): SwiftShader in headless Chromium takes 10-15 s a run"
    try:
        found = chromium.find_chromium()
    except chromium.BrowserNotFoundError as exc:
        return str(exc)
    if found is None:
        return "no Chromium on PATH (install chromium, or set $TESTFLEET_BROWSER)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install 'testfleet[browser]')"
    try:
        assets_dir()
    except BrowserAssetsError as exc:
        return str(exc)
    if spec.backend_device == "webgpu":
        from testfleet.worker.backend_probes import probe_browser

        info = probe_browser()
        if info is None or info.webgpu.adapter is None:
            return f"no WebGPU adapter in {found} headless"
    return None


def spec_config(base: dict[str, Any], spec: BackendSpec, webgpu_iterations: int) -> dict[str, Any]:
    """The benchmark config for ``spec``: the shared one plus the backend's fields;
    WebGPU (software, seconds a run) with ``webgpu_iterations`` and one warm-up."""
    config = {**base, **spec.config_fields()}
    if spec.backend_device == "webgpu":
        config["iterations"] = min(config["iterations"], webgpu_iterations)
        config["warmup"] = min(config["warmup"], 1)
    return config


# ----------------------------------------------------------------------------- plain loops


def _build(config_json: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The model, its input plan and config, built as the worker builds them (same seed)."""
    from testfleet.domain.benchmark import BenchmarkConfig
    from testfleet.worker.benchmarking.inputs import plan_inputs
    from testfleet.worker.benchmarking.models import load_model

    config = BenchmarkConfig.model_validate(config_json)
    loaded = load_model(config)
    return loaded, plan_inputs(loaded, config), config


def _feeds(plan: Any, batch_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Torch tensors and other forward arguments for one batch size (the worker's inputs)."""
    import torch

    from testfleet.worker.benchmarking.inputs import make_inputs

    inputs = make_inputs(plan, batch_size, device=torch.device("cpu"), float_dtype=torch.float32)
    tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    return tensors, {k: v for k, v in inputs.items() if k not in tensors}


def _time(step: Any, warmup: int, iterations: int) -> dict[str, float]:
    """The textbook loop: untimed warmup, then each pass timed with perf_counter."""
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        step()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50": statistics.median(samples), "mean": statistics.fmean(samples)}


def plain_loop(request: dict[str, Any]) -> dict[str, dict[str, float]]:
    """p50 and mean latency in ms per batch size, by the backend's own API (in a child)."""
    import torch

    backend = request["backend"]
    threads = request["config"].get("threads")
    if threads:
        torch.set_num_threads(threads)
    loaded, plan, config = _build(request["config"])
    figures: dict[str, dict[str, float]] = {}
    if backend == "torch":
        model = loaded.model.eval()
        with torch.inference_mode():
            for size in config.batch_sizes:
                tensors, others = _feeds(plan, size)
                figures[str(size)] = _time(
                    lambda t=tensors, o=others: model(**t, **o), config.warmup, config.iterations
                )
        return figures
    from testfleet.worker.benchmarking.backends.onnx_export import EXAMPLE_BATCH, export_onnx

    with tempfile.TemporaryDirectory(prefix="backends-plain-") as folder:
        tensors, others = _feeds(plan, EXAMPLE_BATCH)
        exported = export_onnx(
            loaded.model, tensors, Path(folder) / "model.onnx", call_kwargs=others
        )
        names = list(exported.input_names)
        if backend == "browser":
            return _browser_loop(exported.path, names, plan, config, request["config"])
        run_one = _ort_runner(exported.path, threads) if backend == "onnxruntime" else None
        if backend == "openvino":
            run_one = _openvino_runner(exported.path, threads)
        assert run_one is not None, backend
        for size in config.batch_sizes:
            tensors, _ = _feeds(plan, size)
            feeds = {name: tensors[name].numpy() for name in names}
            figures[str(size)] = _time(run_one(feeds), config.warmup, config.iterations)
    return figures


def _browser_loop(
    model: Path, names: list[str], plan: Any, config: Any, raw: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """The browser's plain loop: one Chromium and session for every batch size."""
    browser = PlainBrowser(model, raw.get("backend_device") or "wasm", raw.get("threads"))
    figures: dict[str, dict[str, float]] = {}
    try:
        for size in config.batch_sizes:
            tensors, _ = _feeds(plan, size)
            feeds = {name: tensors[name].numpy() for name in names}
            figures[str(size)] = browser.time(feeds, config.warmup, config.iterations)
    finally:
        browser.close()
    return figures


def _ort_runner(path: Path, threads: int | None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 2
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return lambda feeds: lambda: session.run(None, feeds)


def _openvino_runner(path: Path, threads: int | None) -> Any:
    import openvino

    settings: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        settings["INFERENCE_NUM_THREADS"] = threads
    compiled = openvino.Core().compile_model(str(path), "CPU", settings)

    def bind(feeds: dict[str, Any]) -> Any:
        request = compiled.create_infer_request()
        for name, array in feeds.items():
            request.set_tensor(name, openvino.Tensor(array))
        return request.infer

    return bind


def run_plain(request: dict[str, Any], core: int | None) -> dict[str, dict[str, float]]:
    completed = subprocess.run(
        [*pinned(core), sys.executable, str(HERE), "--plain-child"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=plain_environment(),
        start_new_session=True,  # as the runner (see fidelity.py's run_plain)
    )
    if completed.returncode != 0:
        raise SystemExit(f"the plain {request['backend']} loop failed:\n{completed.stderr[-3000:]}")
    result: dict[str, dict[str, float]] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# ----------------------------------------------------------------------------- the table


@dataclass
class BackendFigures:
    """One backend's rounds: plain (one more than testfleet's) and testfleet's results."""

    spec: BackendSpec
    plain: list[dict[str, dict[str, float]]] = field(default_factory=list)
    fleet: list[dict[str, Any]] = field(default_factory=list)


def paired_differences(plain: list[float], reported: list[float]) -> list[float]:
    """Each testfleet round against the mean of the plain rounds just before and after it."""
    if len(plain) != len(reported) + 1:
        raise ValueError("need one plain round more than testfleet rounds")
    return [value / ((plain[i] + plain[i + 1]) / 2) - 1 for i, value in enumerate(reported)]


def table(figures: list[BackendFigures], absent: dict[str, str], sizes: list[str]) -> list[str]:
    """The printed comparison: a row per backend and batch size, then the absent ones."""
    lines = [
        f"  {'backend':<18} {'batch':>5} {'testfleet p50':>13} {'plain p50':>10} "
        f"{'items/s':>9} {'paired diff':>11}  output check"
    ]
    for entry in figures:
        check = entry.fleet[0].get("output_check") if entry.fleet else None
        verdict = (
            "torch (the reference)"
            if entry.spec.backend == "torch"
            else "not compared"
            if check is None
            else f"{'passed' if check['passed'] else 'FAILED'} "
            f"(max |diff| {check['max_abs_diff']:.2g} <= {check['tolerance']:g})"
        )
        for size in sizes:
            plain = [r[size]["p50"] for r in entry.plain]
            measured = [r["batch_sizes"][size] for r in entry.fleet]
            reported = [m["latency_p50_ms"] for m in measured]
            difference = statistics.median(paired_differences(plain, reported))
            items = statistics.median(m["throughput_items_per_second"] for m in measured)
            lines.append(
                f"  {entry.spec.label:<18} {size:>5} {statistics.median(reported):>10.2f} ms "
                f"{statistics.median(plain):>7.2f} ms {items:>9.1f} {difference:>+11.1%}  {verdict}"
            )
    lines.extend(f"  {label:<18} absent: {why}" for label, why in absent.items())
    return lines


def rounds_lines(figures: list[BackendFigures], sizes: list[str]) -> list[str]:
    """Every round's p50 in the order measured (plain, testfleet, plain, ...): the
    drift and scatter behind each median paired difference, for the reader to judge."""
    lines = ["  rounds, p50 ms in the order measured (p: plain, t: testfleet):"]
    for entry in figures:
        for size in sizes:
            plain = [r[size]["p50"] for r in entry.plain]
            reported = [r["batch_sizes"][size]["latency_p50_ms"] for r in entry.fleet]
            order = [f"p {plain[0]:.2f}"]
            for fleet_p50, plain_p50 in zip(reported, plain[1:], strict=True):
                order += [f"t {fleet_p50:.2f}", f"p {plain_p50:.2f}"]
            lines.append(f"    {entry.spec.label:<18} {size:>5}: {', '.join(order)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bert-base-uncased")
    parser.add_argument("--batch-sizes", default="1,4,8")
    parser.add_argument("--sequence-length", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--overrides", default='{"num_hidden_layers": 2}')
    parser.add_argument("--threads", type=int, default=1, help="threads on both sides")
    parser.add_argument("--rounds", type=int, default=1, help="testfleet rounds per backend")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--pin", action="store_true", help="measure on the last core")
    parser.add_argument(
        "--webgpu",
        action="store_true",
        help="also the browser's WebGPU (software SwiftShader here: seconds a run)",
    )
    parser.add_argument(
        "--webgpu-iterations", type=int, default=2, help="timed runs a batch size on WebGPU"
    )
    parser.add_argument(
        "--backends",
        default=",".join(dict.fromkeys(spec.backend for spec in SPECS)),
        help="which backends to compare, comma-separated (default: all this machine has)",
    )
    parser.add_argument("--plain-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_child:
        print(json.dumps(plain_loop(json.loads(sys.stdin.read()))))
        return

    wanted = {name.strip() for name in args.backends.split(",") if name.strip()}
    known = {spec.backend for spec in SPECS}
    if not wanted or wanted - known:
        parser.error(
            f"--backends: {', '.join(sorted(wanted - known)) or 'none given'}; "
            f"choose from {', '.join(sorted(known))}"
        )
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    base = {
        "model": args.model,
        "batch_sizes": sizes,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "sequence_length": args.sequence_length,
        "config_overrides": json.loads(args.overrides),
        "threads": args.threads,
    }
    absent: dict[str, str] = {}
    present: list[BackendSpec] = []
    for spec in (spec for spec in SPECS if spec.backend in wanted):
        reason = absent_reason(spec, webgpu=args.webgpu)
        if reason is None:
            present.append(spec)
        else:
            absent[spec.label] = reason
    core = (os.cpu_count() or 1) - 1 if args.pin and (os.cpu_count() or 1) > 1 else None
    figures = [BackendFigures(spec) for spec in present]
    # The worker probes its backends: a task on one is placed only on a worker
    # that detected it (the browser probe starts a Chromium once, at start).
    fleet = Fleet(Path(tempfile.mkdtemp(prefix="testfleet-backends-")), core, probe_backends=True)
    try:
        for entry in figures:
            config = spec_config(base, entry.spec, args.webgpu_iterations)
            plain_request = {"backend": entry.spec.backend, "config": config}
            entry.plain.append(run_plain(plain_request, core))
            for _ in range(args.rounds):
                result = fleet.run({"device": "cpu", "config": config})
                entry.fleet.append(result["results"])
                entry.plain.append(run_plain(plain_request, core))
    finally:
        fleet.close()
    print(
        f"backends: {args.model} {args.overrides}, sequence {args.sequence_length}, fp32, "
        f"{args.iterations} iterations after {args.warmup} warmup, {args.threads} thread(s) "
        f"on both sides; {args.rounds} testfleet round(s) between plain rounds per backend"
        + (f", measuring on core {core}" if core is not None else "")
    )
    lines = table(figures, absent, [str(size) for size in sizes])
    print("\n".join(lines))
    print("\n".join(rounds_lines(figures, [str(size) for size in sizes])))
    worst = max(
        (
            abs(
                statistics.median(
                    paired_differences(
                        [r[str(s)]["p50"] for r in e.plain],
                        [r["batch_sizes"][str(s)]["latency_p50_ms"] for r in e.fleet],
                    )
                )
            )
            for e in figures
            for s in sizes
        ),
        default=0.0,
    )
    verdict = "within" if worst <= args.tolerance else "NOT within"
    print(f"  largest median paired difference {worst:.1%}: {verdict} {args.tolerance:.0%}")


if __name__ == "__main__":
    main()
