"""Hardware metrics sampled while a batch size runs, and their summaries.

Callers: the runner starts a :class:`MetricSampler` around each batch size's
warmup and timed loop and sends the resulting series in that size's line; the
parent merges the series of all sizes (:func:`merge_series`) and turns them
into the result's ``hardware_metrics`` (:func:`hardware_metrics`, docs/formats.md
keys).

The sampler is a daemon thread that reads every ``interval`` seconds, plus
once when it starts and once when it stops, so even a run shorter than one
interval has a figure. What it reads (:func:`system_reader`):

* ``cpu_percent``: the whole machine's CPU use (psutil, since the last read);
* ``process_cpu_percent``: this process's, summed over cores (can exceed 100);
* ``process_rss_mb``: this process's resident memory (its max is the CPU
  peak-memory figure of a batch size);
* on an NVIDIA GPU, via NVML (``worker.hardware.sample_gpu_metrics``):
  ``gpu_utilization_percent``, ``gpu_memory_used_mb`` (the whole device's, as
  NVML reports it), ``power_consumption_watts``.

The thread holds the GIL only for the few microseconds of each read; NVML and
psutil calls release it. This module imports no torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field

from testfleet.worker.hardware import sample_gpu_metrics

DEFAULT_INTERVAL_SECONDS = 0.2
_MIB = 1024**2

Reading = dict[str, float]


class MetricSeries(BaseModel):
    """Count, sum and maximum of one metric: enough to merge and to report mean and max."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=0, ge=0)
    total: float = 0.0
    maximum: float = 0.0

    def add(self, value: float) -> None:
        if not math.isfinite(value):
            return
        self.maximum = value if self.count == 0 else max(self.maximum, value)
        self.count += 1
        self.total += value

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


def merge_series(
    parts: list[Mapping[str, MetricSeries]],
) -> dict[str, MetricSeries]:
    """One series per metric name over every part (e.g. every batch size)."""
    merged: dict[str, MetricSeries] = {}
    for part in parts:
        for name, series in part.items():
            if series.count == 0:
                continue
            into = merged.setdefault(name, MetricSeries())
            into.maximum = series.maximum if into.count == 0 else max(into.maximum, series.maximum)
            into.count += series.count
            into.total += series.total
    return merged


def hardware_metrics(series: Mapping[str, MetricSeries], interval: float) -> dict[str, Any]:
    """The result's ``hardware_metrics``: docs/formats.md's three keys first, then the rest.

    ``memory_usage_mb`` is the peak: the GPU's memory in use where NVML saw a
    GPU, else the runner's resident memory. Utilisation and power are means
    over the samples, with their maxima beside them. Keys without samples are
    left out rather than reported as zero.
    """
    out: dict[str, Any] = {}

    def mean(name: str) -> float | None:
        found = series.get(name)
        return None if found is None or found.mean is None else round(found.mean, 2)

    def peak(name: str) -> float | None:
        found = series.get(name)
        return None if found is None or not found.count else round(found.maximum, 2)

    figures: list[tuple[str, float | None]] = [
        ("gpu_utilization_percent", mean("gpu_utilization_percent")),
        ("memory_usage_mb", peak("gpu_memory_used_mb") or peak("process_rss_mb")),
        ("power_consumption_watts", mean("power_consumption_watts")),
        ("gpu_utilization_percent_max", peak("gpu_utilization_percent")),
        ("power_consumption_watts_max", peak("power_consumption_watts")),
        ("gpu_memory_used_mb_max", peak("gpu_memory_used_mb")),
        ("cpu_percent", mean("cpu_percent")),
        ("cpu_percent_max", peak("cpu_percent")),
        ("process_cpu_percent", mean("process_cpu_percent")),
        ("process_rss_mb_max", peak("process_rss_mb")),
    ]
    out.update({name: value for name, value in figures if value is not None})
    samples = max((s.count for s in series.values()), default=0)
    if samples:
        out["metric_samples"] = samples
        out["metric_sample_interval_seconds"] = interval
    return out


def nvml_index(torch_index: int, visible: str | None = None) -> int | None:
    """The NVML index of torch's CUDA device ``torch_index``, or None when unknown.

    torch numbers only the GPUs in ``CUDA_VISIBLE_DEVICES``; NVML numbers all of
    them. A list of integers maps directly; UUIDs or MIG names cannot be mapped
    here, and then the caller samples every GPU (max across them).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if visible is None or not visible.strip():
        return torch_index
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if torch_index >= len(entries) or not entries[torch_index].isdigit():
        return None
    return int(entries[torch_index])


def system_reader(*, gpu: bool, gpu_index: int | None = None) -> Callable[[], Reading]:
    """A reader of this process and machine (and the GPU when ``gpu``); never raises."""
    process = psutil.Process()
    # Prime the "since last call" counters, so the first real read means something.
    with contextlib.suppress(psutil.Error):
        psutil.cpu_percent(interval=None)
        process.cpu_percent(interval=None)

    def read() -> Reading:
        reading: Reading = {}
        with contextlib.suppress(psutil.Error):
            reading["cpu_percent"] = float(psutil.cpu_percent(interval=None))
            reading["process_cpu_percent"] = float(process.cpu_percent(interval=None))
            reading["process_rss_mb"] = process.memory_info().rss / _MIB
        if gpu:
            samples = sample_gpu_metrics()
            if gpu_index is not None:
                samples = [s for s in samples if s.get("index") == gpu_index]
            for key, name in (
                ("gpu_utilization_percent", "gpu_utilization_percent"),
                ("memory_used_mb", "gpu_memory_used_mb"),
                ("power_watts", "power_consumption_watts"),
            ):
                values = [float(s[key]) for s in samples if s.get(key) is not None]
                if values:
                    reading[name] = max(values)
        return reading

    return read


class MetricSampler:
    """Calls ``read`` on a daemon thread every ``interval`` seconds between start and stop."""

    def __init__(self, read: Callable[[], Reading], interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._read = read
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._series: dict[str, MetricSeries] = {}
        self._thread: threading.Thread | None = None

    def _record(self) -> None:
        try:
            reading = self._read()
        except Exception:  # metrics are best effort; a failed read is a missing sample
            return
        with self._lock:
            for name, value in reading.items():
                self._series.setdefault(name, MetricSeries()).add(value)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._record()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("a sampler starts once")
        self._record()
        self._thread = threading.Thread(target=self._loop, name="bench-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, MetricSeries]:
        """Stop the thread, take a last reading, and return every series."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._record()
        with self._lock:
            return {name: series.model_copy() for name, series in self._series.items()}

    def __enter__(self) -> MetricSampler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Stops the thread if the body failed; after a normal body the caller
        # calls stop() itself to take the series (a second stop is harmless).
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
