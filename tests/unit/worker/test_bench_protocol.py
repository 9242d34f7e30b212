"""The runner's line protocol and the metric summaries: pure, no torch."""

from __future__ import annotations

import threading

import pytest

from testfleet.domain.benchmark import BatchSizeError, BatchSizeMeasurement, BenchmarkConfig
from testfleet.domain.enums import ErrorClass, HardwareKind
from testfleet.worker.benchmarking.metrics import (
    MetricSampler,
    MetricSeries,
    hardware_metrics,
    merge_series,
    nvml_index,
    system_reader,
)
from testfleet.worker.benchmarking.protocol import (
    BatchLine,
    FatalLine,
    FinalLine,
    RunnerRequest,
    SetupLine,
    encode_line,
    encode_request,
    parse_line,
    read_request,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def measurement() -> BatchSizeMeasurement:
    return BatchSizeMeasurement(
        latency_ms=2.0,
        latency_p50_ms=1.9,
        latency_p90_ms=2.5,
        latency_p99_ms=3.0,
        throughput_items_per_second=500.0,
        memory_mb=100.0,
        iterations=10,
    )


def test_every_line_round_trips() -> None:
    lines: list[SetupLine | BatchLine | FinalLine | FatalLine] = [
        SetupLine(
            model_source="config",
            device="cuda:0",
            device_name="NVIDIA H200",
            planned_batch_sizes=[1, 2],
            conditions={"torch_version": "2.13.0"},
        ),
        BatchLine(
            batch_size=1,
            measurement=measurement(),
            metrics={"cpu_percent": MetricSeries(count=2, total=10.0, maximum=7.0)},
        ),
        BatchLine(
            batch_size=2,
            error=BatchSizeError(error_class=ErrorClass.OUT_OF_MEMORY, message="CUDA OOM"),
        ),
        FinalLine(stop_reason="out_of_memory", skipped_batch_sizes=[4]),
        FatalLine(error_class=ErrorClass.INVALID_CONFIG, message="unknown model"),
    ]
    for line in lines:
        raw = encode_line(line)
        assert raw.endswith(b"\n")
        assert raw.count(b"\n") == 1
        assert parse_line(raw) == line


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"not json", b'{"type": "nope"}', b'{"type": "batch"}', b"x" * (2 << 20)],
)
def test_anything_else_is_not_a_line(raw: bytes) -> None:
    assert parse_line(raw) is None


def test_the_request_round_trips_and_refuses_bad_configs() -> None:
    request = RunnerRequest(
        task_id="t-1",
        config=BenchmarkConfig(model="gpt2", batch_sizes="auto", config_overrides={"n_layer": 1}),
        device=HardwareKind.CPU,
    )
    assert read_request(encode_request(request)) == request
    with pytest.raises(ValueError, match="batch_sizes"):
        read_request(
            b'{"task_id": "t", "device": "cpu", "config": {"model": "m", "batch_sizes": []}}'
        )


def test_series_merge_into_means_and_peaks() -> None:
    first = MetricSeries()
    for value in (10.0, 30.0):
        first.add(value)
    second = MetricSeries()
    second.add(50.0)
    second.add(float("nan"))  # ignored
    merged = merge_series(
        [{"cpu_percent": first}, {"cpu_percent": second, "empty": MetricSeries()}]
    )
    assert merged == {"cpu_percent": MetricSeries(count=3, total=90.0, maximum=50.0)}
    assert merged["cpu_percent"].mean == pytest.approx(30.0)
    assert MetricSeries().mean is None


def series(*values: float) -> MetricSeries:
    s = MetricSeries()
    for value in values:
        s.add(value)
    return s


def test_hardware_metrics_use_the_design_documents_keys() -> None:
    gpu = hardware_metrics(
        {
            "gpu_utilization_percent": series(90.0, 100.0),
            "gpu_memory_used_mb": series(3000.0, 3265.0),
            "power_consumption_watts": series(170.0, 190.0),
            "cpu_percent": series(20.0),
            "process_rss_mb": series(900.0, 950.0),
        },
        0.2,
    )
    assert gpu["gpu_utilization_percent"] == 95.0
    assert gpu["memory_usage_mb"] == 3265.0  # the GPU's peak where there is a GPU
    assert gpu["power_consumption_watts"] == 180.0
    assert gpu["gpu_utilization_percent_max"] == 100.0
    assert gpu["power_consumption_watts_max"] == 190.0
    assert gpu["process_rss_mb_max"] == 950.0
    assert gpu["metric_samples"] == 2
    assert gpu["metric_sample_interval_seconds"] == 0.2

    cpu = hardware_metrics({"cpu_percent": series(50.0), "process_rss_mb": series(400.0)}, 0.5)
    assert cpu["memory_usage_mb"] == 400.0  # the process's peak on the CPU
    assert "gpu_utilization_percent" not in cpu  # no sample, no key (never a made-up zero)
    assert "power_consumption_watts" not in cpu
    assert hardware_metrics({}, 0.5) == {}


def test_nvml_index_follows_cuda_visible_devices() -> None:
    assert nvml_index(0, visible="") == 0
    assert nvml_index(0, visible="3,1") == 3
    assert nvml_index(1, visible="3,1") == 1
    assert nvml_index(2, visible="3,1") is None
    assert nvml_index(0, visible="GPU-8d2c") is None


def test_the_sampler_reads_at_start_on_its_thread_and_at_stop() -> None:
    calls: list[str] = []
    read_on_thread = threading.Event()

    def read() -> dict[str, float]:
        calls.append(threading.current_thread().name)
        if threading.current_thread().name == "bench-metrics":
            read_on_thread.set()
        return {"value": float(len(calls))}

    sampler = MetricSampler(read, interval=0.01)
    with sampler:
        assert read_on_thread.wait(5.0)
    result = sampler.stop()["value"]
    assert result.count == len(calls)
    assert result.count >= 3  # start, at least one on the thread, stop
    assert result.maximum == float(len(calls))


def test_the_sampler_survives_a_failing_read() -> None:
    def read() -> dict[str, float]:
        raise RuntimeError("NVML went away")

    sampler = MetricSampler(read, interval=0.01)
    sampler.start()
    assert sampler.stop() == {}


def test_the_system_reader_reads_this_process_without_a_gpu() -> None:
    reading = system_reader(gpu=False)()
    assert reading["process_rss_mb"] > 0
    assert "cpu_percent" in reading
    assert not any(key.startswith("gpu") for key in reading)
