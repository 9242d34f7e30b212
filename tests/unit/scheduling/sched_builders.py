"""Builders for scheduler tests: capabilities, workers, tasks and views in one line each.

No processes, no clock: every time is a number the test chooses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import CpuInfo, GpuInfo, WorkerCapabilities
from testfleet.domain.task import Requirements
from testfleet.scheduling.view import PendingTask, SchedulingView, WorkerView

ALL_TYPES = tuple(TaskType)


def gpu(
    name: str = "NVIDIA H200",
    memory_gb: float = 141.0,
    compute: float | None = 9.0,
    index: int = 0,
    vendor: str = "nvidia",
) -> GpuInfo:
    return GpuInfo(
        index=index, vendor=vendor, name=name, memory_gb=memory_gb, compute_capability=compute
    )


def caps(
    *,
    hardware: Iterable[HardwareKind | str] = (HardwareKind.CPU,),
    memory_gb: float = 16.0,
    cores: int = 8,
    gpus: Iterable[GpuInfo] = (),
    task_types: Iterable[TaskType] = ALL_TYPES,
    tags: Mapping[str, str] | None = None,
) -> WorkerCapabilities:
    return WorkerCapabilities(
        hostname="host",
        os="Linux",
        python_version="3.11",
        cpu=CpuInfo(logical_cores=cores),
        memory_gb=memory_gb,
        gpus=list(gpus),
        hardware=[HardwareKind(h) for h in hardware],
        task_types=list(task_types),
        tags=dict(tags or {}),
    )


def cpu_caps(**kwargs: Any) -> WorkerCapabilities:
    return caps(**kwargs)


def cuda_caps(
    name: str = "NVIDIA H200", gpu_memory_gb: float = 141.0, compute: float = 9.0, **kwargs: Any
) -> WorkerCapabilities:
    """A CUDA worker with one GPU; ``memory_gb`` in kwargs is the host's memory."""
    kwargs.setdefault("memory_gb", 256.0)
    kwargs.setdefault("cores", 64)
    return caps(
        hardware=(HardwareKind.CPU, HardwareKind.CUDA),
        gpus=[gpu(name, gpu_memory_gb, compute)],
        **kwargs,
    )


def worker(
    worker_id: str,
    capabilities: WorkerCapabilities | None = None,
    free_slots: int = 1,
    *,
    accepting: bool = True,
) -> WorkerView:
    return WorkerView(
        worker_id=worker_id,
        capabilities=capabilities if capabilities is not None else cpu_caps(),
        free_slots=free_slots,
        accepting=accepting,
    )


def match_key(task_type: TaskType, requirements: Requirements) -> str:
    """The key the coordinator computes: the type plus the canonical requirements."""
    return f"{task_type.value}|{requirements.key()}"


def task(
    task_id: str,
    *,
    priority: int = 5,
    queued_at: float = 0.0,
    task_type: TaskType = TaskType.SIMULATED,
    requirements: Requirements | None = None,
    **requirement_fields: Any,
) -> PendingTask:
    if requirements is None:
        requirements = Requirements(**requirement_fields)
    return PendingTask(
        task_id=task_id,
        task_type=task_type,
        priority=priority,
        queued_at=queued_at,
        requirements=requirements,
        match_key=match_key(task_type, requirements),
    )


def view(
    tasks: Iterable[PendingTask],
    workers: Iterable[WorkerView],
    *,
    now: float = 0.0,
    aging_seconds: float = 60.0,
    with_pending_keys: bool = True,
) -> SchedulingView:
    """A view as the coordinator builds it: levels oldest first, one entry per key."""
    levels: dict[int, list[PendingTask]] = {}
    keys: dict[str, tuple[TaskType, Requirements]] = {}
    for t in tasks:
        levels.setdefault(t.priority, []).append(t)
        keys[t.match_key] = (t.task_type, t.requirements)
    for level in levels.values():
        level.sort(key=lambda t: (t.queued_at, t.task_id))
    return SchedulingView(
        now=now,
        pending_by_priority=levels,
        workers=list(workers),
        pending_keys=keys if with_pending_keys else {},
        aging_seconds=aging_seconds,
    )


def placed(decisions_placements: Iterable[Any]) -> dict[str, str]:
    """task_id -> worker_id."""
    return {p.task_id: p.worker_id for p in decisions_placements}
