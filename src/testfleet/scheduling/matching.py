"""Matching: can this worker run this task, and if no worker can, why not.

Terms:

* **requirement field**: one of the task's demands on a worker: its task type
  (the worker must list it in ``capabilities.task_types``; a type its operator
  refused with ``--allow-types`` is never listed there, and the reason names
  the refusal), ``hardware``
  (any-of; empty means any), ``min_memory_gb``, ``min_cuda_compute`` (against
  the worker's best GPU), ``min_gpu_memory_gb`` (against its largest GPU),
  ``gpu_model`` (a case-insensitive substring of some GPU's name) and ``tags``
  (each one must equal the worker's tag of the same name), ``resources``
  (each amount within the worker's allocatable total, :func:`allocatable`;
  whether enough is *free* now is the scheduler's business), ``backend`` (a
  benchmark's ONNX Runtime provider, OpenVINO device or browser device, set
  from its config; the worker's detected ``capabilities.backends`` must offer
  it: :func:`~testfleet.domain.backend_requirement.offer_gap`). A field that is not
  given demands nothing. ``exclude_workers`` names workers that may not run
  the task at all; it is about identity, not capabilities, so the scheduler
  applies it beside :func:`matcher` rather than inside it.
* **match**: a worker matches when it meets every given field. A worker that
  lists no task types runs nothing.

Callers: :func:`testfleet.scheduling.scheduler.schedule` uses :func:`matcher`
(the fast yes/no form) to place tasks, :func:`unschedulable_reason` to tell
users why a task waits with no worker that could ever run it, and
:func:`capability_rank` to prefer the least capable worker that fits;
:func:`unmet_requirement` explains one worker's miss (for the API, logs and a
worker's refusal). All are pure functions of their arguments; messages list
things in sorted order so the same input always gives the same text.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from testfleet.domain.backend_requirement import BackendRequirement, offer_gap
from testfleet.domain.benchmark import BenchmarkBackend
from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.domain.resources import UNBOUNDED, ResourceAmounts, format_size
from testfleet.domain.task import Requirements
from testfleet.scheduling.view import WorkerView

#: What :func:`capability_rank` returns: compared element by element, smaller
#: means less capable (has a GPU, largest GPU memory, best CUDA compute
#: capability, memory, logical cores).
CapabilityRank = tuple[bool, float, float, float, int]


def capability_rank(caps: WorkerCapabilities) -> CapabilityRank:
    """How much a worker offers, least capable first, for best-fit placement.

    The scheduler sorts the workers that match a task by this (then by
    ``worker_id``) and takes the first with a free slot, so a CPU test lands
    on a CPU box and the H200 stays free for the work that needs it.
    """
    return (
        len(caps.gpus) > 0,
        caps.max_gpu_memory_gb,
        caps.max_cuda_compute or 0.0,
        caps.memory_gb,
        caps.cpu.logical_cores,
    )


def matcher(
    task_type: TaskType, requirements: Requirements
) -> Callable[[WorkerCapabilities], bool]:
    """Return a fast yes/no test for "can a worker with these capabilities run it".

    The scheduler builds one per match key per call and applies it to the
    workers it considers: only the fields the task gives are checked, and no
    message is built. It agrees with :func:`unmet_requirement` returning None.
    """
    checks = [spec.met for spec in _FIELDS if spec.applies(requirements)]

    def matches(caps: WorkerCapabilities) -> bool:
        return all(met(task_type, requirements, caps) for met in checks)

    return matches


def unmet_requirement(
    task_type: TaskType, requirements: Requirements, caps: WorkerCapabilities
) -> str | None:
    """Return None if a worker with ``caps`` can run the task, else why it cannot.

    The reason names the first unmet field (in the order of :data:`_FIELDS`)
    and what the worker has instead, e.g. ``"min_memory_gb: needs 64, worker
    has 15.6"``.
    """
    for spec in _FIELDS:
        if spec.applies(requirements) and not spec.met(task_type, requirements, caps):
            return spec.worker_reason(task_type, requirements, caps)
    return None


#: The reason when the fleet is empty (the coordinator keeps a key's earlier,
#: more telling reason beside it: see CoordinatorState).
NO_WORKERS_CONNECTED = "no workers are connected"


def unschedulable_reason(
    task_type: TaskType, requirements: Requirements, workers: Collection[WorkerView]
) -> str | None:
    """Return None if some connected worker matches, else why none does.

    Draining workers count: they exist, and a task whose only worker is
    draining is waiting, not unschedulable. The reason is, in this order:
    ``"no workers are connected"``; or each field no worker meets, with what
    the fleet offers instead (``"hardware: needs one of [cuda]; connected
    workers offer [cpu]"``, several joined by ``"; also "``); or, when every
    field is met by some worker but never all by one, the fields in conflict.
    """
    if not workers:
        return NO_WORKERS_CONNECTED
    if requirements.exclude_workers:
        excluded = set(requirements.exclude_workers)
        allowed = [w for w in workers if w.worker_id not in excluded]
        if not allowed:
            return (
                "exclude_workers: every connected worker is excluded "
                f"({_listing(sorted(excluded & {w.worker_id for w in workers}))})"
            )
        workers = allowed
    # Most keys match some worker, usually one near the front: stop there, before
    # listing every worker's capabilities (O(workers) per judged key, 5% of a
    # 10,000-worker simulation when done first).
    matches = matcher(task_type, requirements)
    if any(matches(w.capabilities) for w in workers):
        return None
    fleet = [w.capabilities for w in workers]

    applicable = [spec for spec in _FIELDS if spec.applies(requirements)]
    met_by_none = [
        spec
        for spec in applicable
        if not any(spec.met(task_type, requirements, caps) for caps in fleet)
    ]
    if met_by_none:
        return "; also ".join(
            spec.fleet_reason(task_type, requirements, fleet) for spec in met_by_none
        )
    # Every field is met somewhere; name the ones that some worker fails.
    in_conflict = [
        spec.name
        for spec in applicable
        if not all(spec.met(task_type, requirements, caps) for caps in fleet)
    ]
    return (
        f"no single connected worker meets all of [{', '.join(in_conflict)}] "
        "(each is met by some worker)"
    )


# --- one entry per requirement field ---------------------------------------------------------

_Met = Callable[[TaskType, Requirements, WorkerCapabilities], bool]
_WorkerReason = Callable[[TaskType, Requirements, WorkerCapabilities], str]
_FleetReason = Callable[[TaskType, Requirements, Sequence[WorkerCapabilities]], str]


@dataclass(frozen=True, slots=True)
class _Field:
    """How to check one requirement field against a worker, and explain a miss."""

    name: str
    #: Whether the task gives this field at all (an absent field demands nothing).
    applies: Callable[[Requirements], bool]
    #: The check itself; cheap, builds no text.
    met: _Met
    #: Why one worker misses it; only called when ``met`` is False.
    worker_reason: _WorkerReason
    #: What the fleet offers instead; only called when no worker meets the field.
    fleet_reason: _FleetReason


def _fmt(value: float) -> str:
    """A quantity as people write it: 64, 15.6, 7.5."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _fmt_pair(needed: float, offered: float) -> tuple[str, str]:
    """Format two numbers so that a shortfall never prints as ``needs 64, has 64``."""
    a, b = _fmt(needed), _fmt(offered)
    return (repr(needed), repr(offered)) if a == b else (a, b)


def _fmt_cc(value: float) -> str:
    """A CUDA compute capability as NVIDIA writes it: 8.0, 7.5, 12.0."""
    return f"{value:.1f}" if round(value, 1) == value else repr(value)


def _listing(items: Collection[str]) -> str:
    return "[" + ", ".join(sorted(set(items))) + "]"


def _task_type_met(t: TaskType, _r: Requirements, caps: WorkerCapabilities) -> bool:
    return t in caps.task_types


def _task_type_worker(t: TaskType, _r: Requirements, caps: WorkerCapabilities) -> str:
    runs = ", ".join(sorted({x.value for x in caps.task_types})) or "nothing"
    if t in caps.refused_task_types:
        # Its operator's choice (--allow-types), not a missing executor: say so,
        # or people look for an install problem that is not there.
        return f"task type: worker does not take '{t.value}' tasks (--allow-types: {runs})"
    return f"task type: worker cannot run '{t.value}' tasks (it runs: {runs})"


def _task_type_fleet(t: TaskType, _r: Requirements, fleet: Sequence[WorkerCapabilities]) -> str:
    runs = ", ".join(sorted({x.value for c in fleet for x in c.task_types})) or "nothing"
    refusing = sum(t in c.refused_task_types for c in fleet)
    if refusing:
        return (
            f"task type: needs a worker that takes '{t.value}' tasks; connected workers "
            f"take [{runs}] ({refusing} refuse{'s' if refusing == 1 else ''} '{t.value}' "
            "with --allow-types)"
        )
    return f"task type: no connected worker runs '{t.value}' tasks (they run: {runs})"


#: Hardware kinds a benchmark backend drives, beside the CPU (what its
#: detection adds to a worker's hardware list).
_BACKEND_KINDS = {
    BenchmarkBackend.OPENVINO: {HardwareKind.OPENVINO},
    BenchmarkBackend.BROWSER: {HardwareKind.WEBGPU, HardwareKind.WEBNN},
}


def offered_hardware(
    task_type: TaskType, caps: WorkerCapabilities, backend: BackendRequirement | None = None
) -> list[HardwareKind]:
    """The hardware a worker offers to a task of ``task_type``.

    A benchmark runs through torch, so for one a worker offers only what its
    torch can drive: a GPU that NVML sees but the installed torch cannot use
    (a CPU-only build, say) must not attract a CUDA benchmark that would then
    fail. A benchmark on another ``backend`` is also offered the kinds that
    backend drives (openvino; webgpu, webnn), where detected. Other task types
    get all the hardware the worker has.
    """
    if task_type is not TaskType.BENCHMARK:
        return caps.hardware
    torch = caps.torch
    usable = {HardwareKind.CPU}
    if backend is not None:
        usable |= _BACKEND_KINDS.get(backend.name, set())
    if torch is not None:
        if torch.cuda_available:
            usable.add(HardwareKind.ROCM if torch.hip_version else HardwareKind.CUDA)
        if torch.mps_available:
            usable.add(HardwareKind.MPS)
    return [kind for kind in caps.hardware if kind in usable]


def _hardware_met(t: TaskType, r: Requirements, caps: WorkerCapabilities) -> bool:
    offered = offered_hardware(t, caps, r.backend)
    return any(kind in offered for kind in r.hardware)


def _hardware_worker(t: TaskType, r: Requirements, caps: WorkerCapabilities) -> str:
    needs = _listing([k.value for k in r.hardware])
    offers = _listing([k.value for k in offered_hardware(t, caps, r.backend)])
    return f"hardware: needs one of {needs}, worker offers {offers}{_torch_note(t, r)}"


def _hardware_fleet(t: TaskType, r: Requirements, fleet: Sequence[WorkerCapabilities]) -> str:
    needs = _listing([k.value for k in r.hardware])
    offered = _listing([k.value for c in fleet for k in offered_hardware(t, c, r.backend)])
    return f"hardware: needs one of {needs}; connected workers offer {offered}{_torch_note(t, r)}"


def _torch_note(task_type: TaskType, r: Requirements) -> str:
    if task_type is not TaskType.BENCHMARK:
        return ""
    if r.backend is not None:
        return f" (to torch and {r.backend.name.value}, for this benchmark)"
    return " (to torch, for benchmarks)"


def _memory_met(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> bool:
    return r.min_memory_gb is None or caps.memory_gb >= r.min_memory_gb


def _memory_worker(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> str:
    needs, has = _fmt_pair(r.min_memory_gb or 0.0, caps.memory_gb)
    return f"min_memory_gb: needs {needs}, worker has {has}"


def _memory_fleet(_t: TaskType, r: Requirements, fleet: Sequence[WorkerCapabilities]) -> str:
    needs, has = _fmt_pair(r.min_memory_gb or 0.0, max(c.memory_gb for c in fleet))
    return f"min_memory_gb: needs {needs}; the largest connected worker has {has}"


def _cuda_met(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> bool:
    best = caps.max_cuda_compute
    return r.min_cuda_compute is None or (best is not None and best >= r.min_cuda_compute)


def _cuda_worker(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> str:
    needs = _fmt_cc(r.min_cuda_compute or 0.0)
    best = caps.max_cuda_compute
    if best is None:
        return f"min_cuda_compute: needs {needs}, worker has no CUDA GPU"
    return f"min_cuda_compute: needs {needs}, worker's best GPU has {_fmt_cc(best)}"


def _cuda_fleet(_t: TaskType, r: Requirements, fleet: Sequence[WorkerCapabilities]) -> str:
    needs = _fmt_cc(r.min_cuda_compute or 0.0)
    bests = [c.max_cuda_compute for c in fleet if c.max_cuda_compute is not None]
    if not bests:
        return f"min_cuda_compute: needs {needs}; no connected worker has a CUDA GPU"
    return f"min_cuda_compute: needs {needs}; the best connected GPU has {_fmt_cc(max(bests))}"


def _gpu_memory_met(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> bool:
    # Asking for GPU memory asks for a GPU, even when the amount asked is 0.
    return r.min_gpu_memory_gb is None or (
        bool(caps.gpus) and caps.max_gpu_memory_gb >= r.min_gpu_memory_gb
    )


def _gpu_memory_worker(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> str:
    needed = r.min_gpu_memory_gb or 0.0
    if not caps.gpus:
        return f"min_gpu_memory_gb: needs {_fmt(needed)}, worker has no GPU"
    needs, has = _fmt_pair(needed, caps.max_gpu_memory_gb)
    return f"min_gpu_memory_gb: needs {needs}, worker's largest GPU has {has}"


def _gpu_memory_fleet(_t: TaskType, r: Requirements, fleet: Sequence[WorkerCapabilities]) -> str:
    needed = r.min_gpu_memory_gb or 0.0
    with_gpus = [c for c in fleet if c.gpus]
    if not with_gpus:
        return f"min_gpu_memory_gb: needs {_fmt(needed)}; no connected worker has a GPU"
    needs, has = _fmt_pair(needed, max(c.max_gpu_memory_gb for c in with_gpus))
    return f"min_gpu_memory_gb: needs {needs}; the largest connected GPU has {has}"


def _gpu_model_met(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> bool:
    if r.gpu_model is None:
        return True
    wanted = r.gpu_model.casefold()
    return any(wanted in g.name.casefold() for g in caps.gpus)


def _gpu_model_worker(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> str:
    has = _listing([g.name for g in caps.gpus]) if caps.gpus else "no GPU"
    return f"gpu_model: needs a GPU whose name contains '{r.gpu_model}', worker has {has}"


def _gpu_model_fleet(_t: TaskType, r: Requirements, fleet: Sequence[WorkerCapabilities]) -> str:
    names = [g.name for c in fleet for g in c.gpus]
    has = f"connected GPUs are {_listing(names)}" if names else "no connected worker has a GPU"
    return f"gpu_model: needs a GPU whose name contains '{r.gpu_model}'; {has}"


def _tags_met(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> bool:
    tags = caps.tags
    return all(tags.get(k) == v for k, v in r.tags.items())


def _tags_worker(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> str:
    wrong = [
        f"needs {k}={v}, worker has "
        + (f"{k}={caps.tags[k]}" if k in caps.tags else f"no '{k}' tag")
        for k, v in sorted(r.tags.items())
        if caps.tags.get(k) != v
    ]
    return "tags: " + "; ".join(wrong)


def _tags_fleet(_t: TaskType, r: Requirements, fleet: Sequence[WorkerCapabilities]) -> str:
    missing = []
    for k, v in sorted(r.tags.items()):
        offered = {c.tags[k] for c in fleet if k in c.tags}
        if v in offered:
            continue
        if offered:
            missing.append(f"needs {k}={v}; connected workers have {k} in {_listing(offered)}")
        else:
            missing.append(f"needs {k}={v}; no connected worker has a '{k}' tag")
    if not missing:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(r.tags.items()))
        return f"tags: no connected worker has all of {wanted}"
    return "tags: " + "; ".join(missing)


def _backend_met(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> bool:
    return r.backend is None or offer_gap(r.backend, caps) is None


def _backend_worker(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> str:
    assert r.backend is not None
    return f"backend: needs {r.backend.describe()}, worker has {offer_gap(r.backend, caps)}"


def _backend_fleet(_t: TaskType, r: Requirements, fleet: Sequence[WorkerCapabilities]) -> str:
    assert r.backend is not None
    requirement = r.backend
    gaps = sorted({gap for caps in fleet if (gap := offer_gap(requirement, caps)) is not None})
    return f"backend: needs {requirement.describe()}; connected workers have {'; '.join(gaps)}"


def allocatable(caps: WorkerCapabilities) -> ResourceAmounts:
    """The totals a worker lets tasks reserve (see :mod:`testfleet.domain.resources`).

    A worker that advertises none (older than resource limits) is judged by
    its memory and logical cores; its disk, and memory it could not measure,
    bound nothing.
    """
    if caps.resources is not None:
        return caps.resources.amounts()
    memory = int(caps.memory_gb * 1024**3) if caps.memory_gb > 0 else UNBOUNDED
    return ResourceAmounts(memory, caps.cpu.logical_cores, UNBOUNDED)


def _short(needs: ResourceAmounts, has: ResourceAmounts) -> list[tuple[str, str, str]]:
    """(name, needed, offered) for each amount ``has`` falls short of."""
    rows = []
    if needs.memory_bytes > has.memory_bytes:
        rows.append(("memory", format_size(needs.memory_bytes), format_size(has.memory_bytes)))
    if needs.cpu_cores > has.cpu_cores:
        rows.append(("CPU cores", str(needs.cpu_cores), str(has.cpu_cores)))
    if needs.disk_bytes > has.disk_bytes:
        rows.append(("disk", format_size(needs.disk_bytes), format_size(has.disk_bytes)))
    return rows


def _resources_met(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> bool:
    return r.resources.amounts().fits_in(allocatable(caps))


def _resources_worker(_t: TaskType, r: Requirements, caps: WorkerCapabilities) -> str:
    short = _short(r.resources.amounts(), allocatable(caps))
    return "resources: " + "; ".join(
        f"needs {need} {name}, worker offers {has}" for name, need, has in short
    )


def _resources_fleet(_t: TaskType, r: Requirements, fleet: Sequence[WorkerCapabilities]) -> str:
    totals = [allocatable(c) for c in fleet]
    largest = ResourceAmounts(
        max(t.memory_bytes for t in totals),
        max(t.cpu_cores for t in totals),
        max(t.disk_bytes for t in totals),
    )
    short = _short(r.resources.amounts(), largest)
    if not short:
        return "resources: no single connected worker offers all of them at once"
    return "resources: " + "; ".join(
        f"needs {need} {name}; the largest worker offers {has}" for name, need, has in short
    )


#: The fields in the order they are checked and reported.
_FIELDS: tuple[_Field, ...] = (
    _Field("task type", lambda r: True, _task_type_met, _task_type_worker, _task_type_fleet),
    _Field(
        "hardware", lambda r: bool(r.hardware), _hardware_met, _hardware_worker, _hardware_fleet
    ),
    _Field(
        "min_memory_gb",
        lambda r: r.min_memory_gb is not None,
        _memory_met,
        _memory_worker,
        _memory_fleet,
    ),
    _Field(
        "min_cuda_compute",
        lambda r: r.min_cuda_compute is not None,
        _cuda_met,
        _cuda_worker,
        _cuda_fleet,
    ),
    _Field(
        "min_gpu_memory_gb",
        lambda r: r.min_gpu_memory_gb is not None,
        _gpu_memory_met,
        _gpu_memory_worker,
        _gpu_memory_fleet,
    ),
    _Field(
        "gpu_model",
        lambda r: r.gpu_model is not None,
        _gpu_model_met,
        _gpu_model_worker,
        _gpu_model_fleet,
    ),
    _Field("tags", lambda r: bool(r.tags), _tags_met, _tags_worker, _tags_fleet),
    _Field(
        "backend",
        lambda r: r.backend is not None,
        _backend_met,
        _backend_worker,
        _backend_fleet,
    ),
    _Field(
        "resources",
        lambda r: r.resources.declared,
        _resources_met,
        _resources_worker,
        _resources_fleet,
    ),
)
