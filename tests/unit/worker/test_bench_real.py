"""Real benchmarks end to end: BenchmarkExecutor -> runner child -> torch on the CPU.

Every known model at fp32, bf16 and int8 for one model, a saved model from a
path, refusals the runner finds (unknown config key, device missing), and a
cancel and a timeout of a real child. Models are TINY (config_overrides), so
each child spends its time importing torch and transformers (~5 s here); the
independent runs share one module fixture that runs them two at a time.

Skipped where torch or transformers is not installed. Nothing is downloaded
(HF_HUB_OFFLINE=1), and no test asserts on wall-clock speed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from testfleet.domain.benchmark import BenchmarkOutcome
from testfleet.domain.enums import ErrorClass, HardwareKind, ResultStatus, TaskType
from testfleet.domain.result import TaskResult, decode_logs
from testfleet.domain.task import TaskSpec
from testfleet.worker.benchmarking.allocator import AllocatorSetting
from testfleet.worker.executors.base import ExecutionContext
from testfleet.worker.executors.benchmark import (
    RUNNER_MODULE,
    BenchmarkExecutor,
    default_runner_command,
)
from testfleet.worker.executors.process_group import group_has_live_members

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("torch") is None
        or importlib.util.find_spec("transformers") is None,
        reason="needs torch and transformers (the bench extra)",
    ),
]

TINY: dict[str, dict[str, Any]] = {
    "bert-base-uncased": {
        "num_hidden_layers": 1,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "gpt2": {"n_layer": 1, "n_embd": 32, "n_head": 2},
    "t5-small": {"num_layers": 1, "d_model": 32, "d_ff": 64, "num_heads": 2, "d_kv": 16},
    "vit-base-patch16-224": {
        "num_hidden_layers": 1,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": 32,
        "patch_size": 8,
    },
    "whisper-tiny": {
        "encoder_layers": 1,
        "decoder_layers": 1,
        "d_model": 32,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "max_source_positions": 16,  # input_features of 32 frames
    },
}

COMMON = {"iterations": 5, "warmup": 1, "sequence_length": 16, "threads": 1}

#: name -> (task config, requirements.hardware) of the runs the module fixture makes.
RUNS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "bert": ({"model": "bert-base-uncased", "batch_sizes": [1, 2]}, []),
    "gpt2-auto": ({"model": "gpt2", "batch_sizes": "auto", "max_batch_size": 4}, ["cpu"]),
    "t5": ({"model": "t5-small", "batch_sizes": [2]}, []),
    "vit": ({"model": "vit-base-patch16-224", "batch_sizes": [1, 2]}, []),
    "whisper": ({"model": "whisper-tiny", "batch_sizes": [1], "sequence_length": 8}, []),
    "bert-bf16": ({"model": "bert-base-uncased", "batch_sizes": [2], "precision": "bf16"}, []),
    "bert-int8": ({"model": "bert-base-uncased", "batch_sizes": [2], "precision": "int8"}, []),
    "bad-key": ({"model": "bert-base-uncased", "config_overrides": {"num_hiden_layers": 1}}, []),
    "no-device": ({"model": "bert-base-uncased", "device": "mps"}, ["mps"]),
}

SAVE_TINY_GPT2 = """
import sys
from transformers import GPT2Config, GPT2LMHeadModel
config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=128, n_positions=64)
GPT2LMHeadModel(config).save_pretrained(sys.argv[1])
"""


def task_for(name: str, config: dict[str, Any], hardware: list[str]) -> TaskSpec:
    model = config["model"]
    full = {**COMMON, **config}
    full.setdefault("config_overrides", TINY.get(model, {}))
    return TaskSpec.model_validate(
        {
            "task_id": f"real-{name}",
            "type": "benchmark",
            "timeout_seconds": 180,
            "requirements": {"hardware": hardware},
            "config": full,
        }
    )


def context_for(work_dir: Path, attempt_id: int = 1) -> ExecutionContext:
    return ExecutionContext(
        worker_id="worker-real",
        attempt_id=attempt_id,
        attempt=1,
        cancel_event=asyncio.Event(),
        work_dir=work_dir,
    )


def executor(**kwargs: Any) -> BenchmarkExecutor:
    return BenchmarkExecutor(kill_grace_seconds=1.0, metrics_interval_seconds=0.05, **kwargs)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TaskResult]]:
    """Every run in RUNS plus one from a saved model path, two children at a time."""
    base = tmp_path_factory.mktemp("bench")
    saved = base / "tiny-gpt2"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        subprocess.run(
            [sys.executable, "-c", textwrap.dedent(SAVE_TINY_GPT2), str(saved)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        tasks = {name: task_for(name, *spec) for name, spec in RUNS.items()}
        tasks["local"] = task_for(
            "local",
            {"model": "my-tiny-gpt2", "model_path": str(saved), "batch_sizes": [2]},
            [],
        )

        async def run_all() -> dict[str, TaskResult]:
            gate = asyncio.Semaphore(2)
            shared = executor()

            async def one(index: int, name: str, task: TaskSpec) -> tuple[str, TaskResult]:
                async with gate:
                    return name, await shared.run(task, context_for(base / "work", index))

            pairs = await asyncio.gather(
                *(one(i, name, task) for i, (name, task) in enumerate(tasks.items()))
            )
            return dict(pairs)

        yield asyncio.run(run_all())


def completed(result: TaskResult) -> BenchmarkOutcome:
    assert result.status is ResultStatus.COMPLETED, (result.error, decode_logs(result.logs))
    assert result.error is None
    assert result.simulation_status.is_simulated is False
    return BenchmarkOutcome.model_validate(result.results)


def assert_sane(outcome: BenchmarkOutcome, sizes: list[int]) -> None:
    assert sorted(int(size) for size in outcome.batch_sizes) == sizes
    for measured in outcome.batch_sizes.values():
        assert measured.throughput_items_per_second > 0
        assert measured.latency_p99_ms >= measured.latency_p90_ms >= measured.latency_p50_ms > 0
        assert measured.latency_ms > 0
        assert measured.memory_mb > 0
        assert measured.iterations == COMMON["iterations"]
    assert outcome.optimal_batch_size in sizes
    assert outcome.hardware is HardwareKind.CPU
    assert outcome.device == "cpu"
    assert outcome.device_name
    assert outcome.errors == {}
    conditions = outcome.conditions
    for key in (
        "torch_version",
        "transformers_version",
        "hostname",
        "threads",
        "load_before",
        "warmup",
        "iterations",
        "model_parameters",
    ):
        assert key in conditions, key
    assert conditions["threads"] == 1  # config.threads was applied
    # The allocator keeps freed memory (allocator.py): the fidelity fix of issue 15.
    assert conditions["allocator"] == AllocatorSetting.KEEP_FREED.value
    assert conditions["precision"] == outcome.precision.value


@pytest.mark.parametrize(
    ("name", "sizes", "family"),
    [
        ("bert", [1, 2], "text_encoder"),
        ("t5", [2], "seq2seq"),
        ("vit", [1, 2], "vision"),
        ("whisper", [1], "speech"),
    ],
)
def test_every_known_model_runs_at_fp32(
    results: dict[str, TaskResult], name: str, sizes: list[int], family: str
) -> None:
    outcome = completed(results[name])
    assert_sane(outcome, sizes)
    assert outcome.precision.value == "fp32"
    assert outcome.model_source == "config"
    assert outcome.auto_batch_size is False
    assert outcome.conditions["input_family"] == family


def test_input_shapes_follow_the_overrides(results: dict[str, TaskResult]) -> None:
    vit = completed(results["vit"]).conditions
    assert vit["image_size"] == 32
    whisper = completed(results["whisper"]).conditions
    assert whisper["audio_frames"] == 32  # 2 * max_source_positions
    assert whisper["num_mel_bins"] == 80
    assert whisper["decoder_length"] == 8
    assert completed(results["t5"]).conditions["decoder_length"] == 16


def test_auto_batch_size_reports_the_curve_and_an_optimum(
    results: dict[str, TaskResult],
) -> None:
    outcome = completed(results["gpt2-auto"])
    assert outcome.auto_batch_size is True
    measured = sorted(int(size) for size in outcome.batch_sizes)
    assert measured[:2] == [1, 2]  # a plateau needs two sizes after the first
    assert set(measured) <= {1, 2, 4}
    assert outcome.conditions["stop_reason"] in ("completed", "plateau")
    assert outcome.conditions["input_family"] == "causal_lm"
    assert "auto_batch" in outcome.conditions
    best = max(outcome.batch_sizes.values(), key=lambda m: m.throughput_items_per_second)
    assert outcome.batch_sizes[str(outcome.optimal_batch_size)] == best


def test_hardware_metrics_are_measured(results: dict[str, TaskResult]) -> None:
    metrics = results["bert"].hardware_metrics
    assert metrics["memory_usage_mb"] > 0
    assert "cpu_percent" in metrics
    assert metrics["metric_samples"] >= 2
    assert "gpu_utilization_percent" not in metrics  # no GPU, no made-up figure


@pytest.mark.parametrize(("name", "precision"), [("bert-bf16", "bf16"), ("bert-int8", "int8")])
def test_other_precisions(results: dict[str, TaskResult], name: str, precision: str) -> None:
    outcome = completed(results[name])
    assert_sane(outcome, [2])
    assert outcome.precision.value == precision
    if precision == "int8":
        assert "quantize_dynamic" in outcome.conditions["quantization"]
    else:
        assert outcome.conditions["dtype"] == "bfloat16"


def test_a_saved_model_runs_from_its_path(results: dict[str, TaskResult]) -> None:
    outcome = completed(results["local"])
    assert_sane(outcome, [2])
    assert outcome.model == "my-tiny-gpt2"
    assert outcome.model_source == "local_path"
    assert outcome.conditions["model_class"] == "GPT2LMHeadModel"
    assert outcome.conditions["input_family"] == "causal_lm"


def test_an_unknown_config_key_is_invalid_config(results: dict[str, TaskResult]) -> None:
    result = results["bad-key"]
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INVALID_CONFIG
    assert "num_hiden_layers" in result.error.message
    assert "num_hidden_layers" in result.error.message  # the keys it does have are listed
    assert result.results == {}
    assert result.simulation_status.is_simulated is False


@pytest.mark.skipif(sys.platform == "darwin", reason="MPS may be available on macOS")
def test_a_device_torch_cannot_use_is_infrastructure(results: dict[str, TaskResult]) -> None:
    result = results["no-device"]
    assert result.status is ResultStatus.FAILED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.INFRASTRUCTURE
    assert "mps" in result.error.message
    assert "refused" in decode_logs(result.logs)  # the runner's stderr is the log


def runner_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children():
        try:
            if RUNNER_MODULE in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_cancel_mid_run_kills_the_runner_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    context = context_for(tmp_path)
    pids: list[int] = []

    def on_line(line: Any) -> None:
        if line.type == "setup":  # the model is built; batch size 1 is being timed
            pids.extend(child.pid for child in runner_children())
            context.cancel_event.set()

    task = task_for(
        "cancel",
        {"model": "bert-base-uncased", "batch_sizes": [1, 2], "iterations": 100_000},
        [],
    )
    result = await executor(on_line=on_line).run(task, context)

    assert result.status is ResultStatus.CANCELLED
    assert result.error is not None
    assert result.error.error_class is ErrorClass.CANCELLED
    assert result.simulation_status.is_simulated is False
    outcome = BenchmarkOutcome.model_validate(result.results)
    assert outcome.batch_sizes == {}
    assert outcome.conditions["stop_reason"] == "cancelled"
    (pid,) = pids
    assert is_gone(pid)
    assert not group_has_live_members(pid)


async def test_timeout_kills_the_runner_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The runner says its pid as it starts (sh writes its own, then becomes the
    # runner by exec), so the test knows the pid without watching for it: the
    # timeout may end the runner before it has printed anything.
    pid_file = tmp_path / "runner.pid"
    announcing = ["sh", "-c", f'echo $$ > {pid_file}; exec "$@"', "sh", *default_runner_command()]
    task = TaskSpec.model_validate(
        {
            **task_for("timeout", {"model": "gpt2", "iterations": 100_000}, []).model_dump(),
            "timeout_seconds": 3,
        }
    )
    assert task.type is TaskType.BENCHMARK
    result = await executor(runner_command=announcing).run(task, context_for(tmp_path))

    assert result.status is ResultStatus.TIMED_OUT
    assert result.error is not None
    assert result.error.error_class is ErrorClass.TIMEOUT
    assert result.simulation_status.is_simulated is False
    pid = int(pid_file.read_text())
    assert is_gone(pid)
    assert not group_has_live_members(pid)
