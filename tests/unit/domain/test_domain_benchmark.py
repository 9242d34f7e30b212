"""Benchmark rows and their variant: what makes two runs comparable."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from testfleet.domain.benchmark import (
    BUSY_CPU_PERCENT,
    BenchmarkConfig,
    BenchmarkOutcome,
    benchmark_rows,
    benchmark_variant,
    load_note,
)


def outcome(**conditions: Any) -> dict[str, Any]:
    return {
        "model": "bert-base-uncased",
        "model_source": "config",
        "hardware": "cpu",
        "device": "cpu",
        "device_name": "Xeon",
        "precision": "fp32",
        "auto_batch_size": False,
        "batch_sizes": {
            "1": {
                "latency_ms": 10.0,
                "latency_p50_ms": 9.0,
                "latency_p90_ms": 11.0,
                "latency_p99_ms": 12.0,
                "throughput_items_per_second": 100.0,
                "memory_mb": 500.0,
                "iterations": 5,
            }
        },
        "errors": {"64": {"error_class": "out_of_memory", "message": "CUDA out of memory"}},
        "conditions": {"torch_version": "2.13.0", "transformers_version": "5.24.0", **conditions},
    }


def test_variant_names_overrides_path_and_input_size() -> None:
    plain = BenchmarkOutcome.model_validate(outcome(sequence_length=128))
    assert benchmark_variant(plain) == "seq=128"
    cut = BenchmarkOutcome.model_validate(
        outcome(sequence_length=64, config_overrides={"num_hidden_layers": 2, "hidden_size": 64})
    )
    assert benchmark_variant(cut) == "hidden_size=64 num_hidden_layers=2 seq=64"
    local = outcome(image_size=224, model_path="/models/vit")
    local["model_source"] = "local_path"
    assert benchmark_variant(BenchmarkOutcome.model_validate(local)) == "path=/models/vit image=224"


def test_rows_one_per_batch_size_including_failed_ones() -> None:
    rows = benchmark_rows(
        attempt_id=7,
        task_id="t",
        worker_id="w",
        recorded_time=1.0,
        results=outcome(sequence_length=128),
        is_simulated=False,
    )
    assert [(r.batch_size, r.throughput_items_per_second, r.error_class) for r in rows] == [
        (1, 100.0, None),
        (64, None, "out_of_memory"),
    ]
    assert {r.variant for r in rows} == {"seq=128"}
    assert rows[0].torch_version == "2.13.0"


def test_a_result_that_is_not_a_benchmark_outcome_gives_no_rows() -> None:
    rows = benchmark_rows(
        attempt_id=1, task_id="t", worker_id="w", recorded_time=1.0, results={}, is_simulated=False
    )
    assert rows == []


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"model": "gpt2", "batch_sizes": [0]}, "batch_sizes"),
        ({"model": "gpt2", "batch_sizes": []}, "batch_sizes"),
        ({"model": "gpt2", "batch_sizes": [2, 2]}, "batch_sizes"),
        ({"model": "gpt2", "batch_sizes": "sometimes"}, "batch_sizes"),
        ({"model": "gpt2", "precision": "fp8"}, "precision"),
        ({"model": "gpt2", "iterations": 0}, "iterations"),
        ({"model": "gpt2", "colour": "red"}, "colour"),
    ],
)
def test_bad_configs_name_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        BenchmarkConfig.model_validate(config)
    assert field in str(caught.value)


def test_batch_sizes_are_sorted_and_auto_is_accepted() -> None:
    assert BenchmarkConfig.model_validate({"model": "gpt2", "batch_sizes": [8, 1]}).batch_sizes == [
        1,
        8,
    ]
    assert (
        BenchmarkConfig.model_validate({"model": "gpt2", "batch_sizes": "auto"}).batch_sizes
        == "auto"
    )


def test_a_device_pinned_in_the_config_must_be_required_too() -> None:
    from testfleet.domain.task import TaskSpec

    document: dict[str, Any] = {
        "task_id": "b",
        "type": "benchmark",
        "config": {"model": "gpt2", "device": "cuda"},
    }
    with pytest.raises(ValidationError, match=r"requirements.hardware does not include it"):
        TaskSpec.model_validate(document)
    document["requirements"] = {"hardware": ["cuda"]}
    assert TaskSpec.model_validate(document).requirements.hardware == ["cuda"]
    cpu = {"task_id": "c", "type": "benchmark", "config": {"model": "gpt2", "device": "cpu"}}
    assert TaskSpec.model_validate(cpu).type.value == "benchmark"


def rows_of(document: dict[str, Any]) -> list[Any]:
    return benchmark_rows(
        attempt_id=1,
        task_id="t",
        worker_id="w",
        recorded_time=0.0,
        results=document,
        is_simulated=False,
    )


@pytest.mark.parametrize(
    ("load_before", "note"),
    [
        ({"cpu_percent": 3.0, "load_average": [0.1, 0.2, 0.2]}, None),
        ({"cpu_percent": BUSY_CPU_PERCENT - 0.1}, None),
        (
            {"cpu_percent": 97.0, "load_average": [3.1, 2.0, 1.0]},
            "the machine was busy as the run started: CPU 97 %, load average 3.1; "
            "figures may be slower than on a quiet machine",
        ),
        (
            {"cpu_percent": BUSY_CPU_PERCENT},
            "the machine was busy as the run started: CPU 25 %; "
            "figures may be slower than on a quiet machine",
        ),
        # Whatever an older or odd worker recorded, never an error.
        ({"cpu_percent": "high"}, None),
        ({"cpu_percent": True}, None),
        ("busy", None),
        (None, None),
    ],
)
def test_a_busy_machine_is_noted_on_every_row(load_before: Any, note: str | None) -> None:
    # Issue 8: the demo's benchmark ran with the CPU 97 % busy and said nothing.
    conditions = {} if load_before is None else {"load_before": load_before}
    assert load_note(conditions) == note
    rows = rows_of(outcome(**conditions))
    assert [row.load_note for row in rows] == [note, note]
