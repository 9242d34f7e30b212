"""Matching a task's requirements against one worker and against the whole fleet."""

from __future__ import annotations

import pytest
from sched_builders import caps, cpu_caps, cuda_caps, gpu, worker

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.task import Requirements
from testfleet.scheduling.matching import (
    capability_rank,
    unmet_requirement,
    unschedulable_reason,
)

SIM = TaskType.SIMULATED
CUDA = HardwareKind.CUDA


# --- one worker -------------------------------------------------------------------------------


def test_no_requirements_match_any_worker_that_runs_the_type() -> None:
    assert unmet_requirement(SIM, Requirements(), cpu_caps()) is None


def test_everything_met_matches() -> None:
    requirements = Requirements(
        hardware=[HardwareKind.ROCM, CUDA],
        min_memory_gb=64,
        min_cuda_compute=8.0,
        min_gpu_memory_gb=80,
        gpu_model="h200",
        tags={"rack": "b"},
    )
    worker_caps = cuda_caps(memory_gb=256, tags={"rack": "b", "zone": "x"})
    assert unmet_requirement(SIM, requirements, worker_caps) is None


def test_hardware_is_any_of() -> None:
    assert unmet_requirement(SIM, Requirements(hardware=["rocm", "cuda"]), cuda_caps()) is None
    reason = unmet_requirement(SIM, Requirements(hardware=["cuda", "rocm"]), cpu_caps())
    assert reason == "hardware: needs one of [cuda, rocm], worker offers [cpu]"


def test_memory_reason() -> None:
    reason = unmet_requirement(SIM, Requirements(min_memory_gb=64), cpu_caps(memory_gb=15.6))
    assert reason == "min_memory_gb: needs 64, worker has 15.6"
    assert (
        unmet_requirement(SIM, Requirements(min_memory_gb=15.6), cpu_caps(memory_gb=15.6)) is None
    )


def test_memory_shortfall_never_reads_as_equal() -> None:
    reason = unmet_requirement(SIM, Requirements(min_memory_gb=64), cpu_caps(memory_gb=63.999))
    assert reason == "min_memory_gb: needs 64.0, worker has 63.999"


def test_compute_reason_names_best_gpu() -> None:
    worker_caps = caps(
        hardware=["cpu", "cuda"],
        gpus=[gpu("Tesla T4", 16, 7.5, index=0), gpu("GTX 1080", 8, 6.1, index=1)],
    )
    reason = unmet_requirement(SIM, Requirements(min_cuda_compute=8.0), worker_caps)
    assert reason == "min_cuda_compute: needs 8.0, worker's best GPU has 7.5"
    assert unmet_requirement(SIM, Requirements(min_cuda_compute=7.5), worker_caps) is None


def test_compute_reason_without_cuda_gpu() -> None:
    amd = caps(hardware=["rocm"], gpus=[gpu("AMD MI300X", 192, None, vendor="amd")])
    for worker_caps in (cpu_caps(), amd):
        reason = unmet_requirement(SIM, Requirements(min_cuda_compute=8.0), worker_caps)
        assert reason == "min_cuda_compute: needs 8.0, worker has no CUDA GPU"


def test_gpu_memory_reason() -> None:
    reason = unmet_requirement(SIM, Requirements(min_gpu_memory_gb=80), cuda_caps("L4", 24, 8.9))
    assert reason == "min_gpu_memory_gb: needs 80, worker's largest GPU has 24"
    reason = unmet_requirement(SIM, Requirements(min_gpu_memory_gb=1), cpu_caps())
    assert reason == "min_gpu_memory_gb: needs 1, worker has no GPU"


def test_gpu_model_is_a_case_insensitive_substring() -> None:
    h100 = cuda_caps("NVIDIA H100 80GB HBM3", 80, 9.0)
    assert unmet_requirement(SIM, Requirements(gpu_model="h100"), h100) is None
    reason = unmet_requirement(SIM, Requirements(gpu_model="H100"), cuda_caps("NVIDIA A100", 40))
    assert reason == "gpu_model: needs a GPU whose name contains 'H100', worker has [NVIDIA A100]"
    reason = unmet_requirement(SIM, Requirements(gpu_model="H100"), cpu_caps())
    assert reason == "gpu_model: needs a GPU whose name contains 'H100', worker has no GPU"


def test_tags_must_all_be_equal() -> None:
    requirements = Requirements(tags={"rack": "b", "zone": "x"})
    assert unmet_requirement(SIM, requirements, cpu_caps(tags={"rack": "b", "zone": "x"})) is None
    reason = unmet_requirement(SIM, Requirements(tags={"rack": "b"}), cpu_caps(tags={"rack": "a"}))
    assert reason == "tags: needs rack=b, worker has rack=a"
    reason = unmet_requirement(SIM, requirements, cpu_caps(tags={"rack": "a"}))
    assert reason == "tags: needs rack=b, worker has rack=a; needs zone=x, worker has no 'zone' tag"


def test_task_type_reason() -> None:
    worker_caps = cpu_caps(task_types=[TaskType.SIMULATED])
    reason = unmet_requirement(TaskType.COMMAND, Requirements(), worker_caps)
    assert reason == "task type: worker cannot run 'command' tasks (it runs: simulated)"
    reason = unmet_requirement(TaskType.COMMAND, Requirements(), cpu_caps(task_types=[]))
    assert reason == "task type: worker cannot run 'command' tasks (it runs: nothing)"


def test_a_type_refused_with_allow_types_is_named_as_refused() -> None:
    allowed = [TaskType.TEST, TaskType.BENCHMARK]
    refusing = cpu_caps(task_types=allowed).model_copy(
        update={"refused_task_types": [TaskType.COMMAND, TaskType.SIMULATED]}
    )
    reason = unmet_requirement(TaskType.COMMAND, Requirements(), refusing)
    assert (
        reason == "task type: worker does not take 'command' tasks (--allow-types: benchmark, test)"
    )
    other = cpu_caps(task_types=[TaskType.SIMULATED])
    fleet = [worker("locked", refusing), worker("sim", other)]
    assert unschedulable_reason(TaskType.COMMAND, Requirements(), fleet) == (
        "task type: needs a worker that takes 'command' tasks; connected workers take "
        "[benchmark, simulated, test] (1 refuses 'command' with --allow-types)"
    )
    # Only the workers that refused it are counted; none: the usual reason.
    assert unschedulable_reason(TaskType.COMMAND, Requirements(), [worker("sim", other)]) == (
        "task type: no connected worker runs 'command' tasks (they run: simulated)"
    )


# --- the fleet --------------------------------------------------------------------------------


def test_no_workers() -> None:
    assert unschedulable_reason(SIM, Requirements(), []) == "no workers are connected"


def test_one_matching_worker_is_enough_even_if_draining() -> None:
    fleet = [worker("cpu", cpu_caps()), worker("gpu", cuda_caps(), accepting=False, free_slots=0)]
    assert unschedulable_reason(SIM, Requirements(hardware=[CUDA]), fleet) is None


@pytest.mark.parametrize(
    ("task_type", "requirements", "expected"),
    [
        (
            SIM,
            Requirements(hardware=[CUDA]),
            "hardware: needs one of [cuda]; connected workers offer [cpu, rocm]",
        ),
        (
            SIM,
            Requirements(min_memory_gb=512),
            "min_memory_gb: needs 512; the largest connected worker has 64",
        ),
        (
            SIM,
            Requirements(min_cuda_compute=9.0),
            "min_cuda_compute: needs 9.0; no connected worker has a CUDA GPU",
        ),
        (
            SIM,
            Requirements(min_gpu_memory_gb=200),
            "min_gpu_memory_gb: needs 200; the largest connected GPU has 192",
        ),
        (
            SIM,
            Requirements(gpu_model="H100"),
            "gpu_model: needs a GPU whose name contains 'H100'; connected GPUs are [AMD MI300X]",
        ),
        (
            SIM,
            Requirements(tags={"rack": "c"}),
            "tags: needs rack=c; connected workers have rack in [a, b]",
        ),
        (
            SIM,
            Requirements(tags={"pool": "perf"}),
            "tags: needs pool=perf; no connected worker has a 'pool' tag",
        ),
        (
            TaskType.BENCHMARK,
            Requirements(),
            "task type: no connected worker runs 'benchmark' tasks (they run: command, simulated)",
        ),
    ],
)
def test_fleet_reason_names_the_field_nobody_meets(
    task_type: TaskType, requirements: Requirements, expected: str
) -> None:
    types = [TaskType.SIMULATED, TaskType.COMMAND]
    fleet = [
        worker("cpu", cpu_caps(memory_gb=64, tags={"rack": "b"}, task_types=types)),
        worker(
            "amd",
            caps(
                hardware=["cpu", "rocm"],
                memory_gb=32,
                gpus=[gpu("AMD MI300X", 192, None, vendor="amd")],
                tags={"rack": "a"},
                task_types=types[:1],
            ),
        ),
    ]
    assert unschedulable_reason(task_type, requirements, fleet) == expected


def test_fleet_compute_reason_names_the_best_gpu() -> None:
    fleet = [worker("t4", cuda_caps("T4", 16, 7.5)), worker("v100", cuda_caps("V100", 32, 7.0))]
    reason = unschedulable_reason(SIM, Requirements(min_cuda_compute=8.0), fleet)
    assert reason == "min_cuda_compute: needs 8.0; the best connected GPU has 7.5"


def test_fleet_reason_lists_every_field_nobody_meets() -> None:
    fleet = [worker("cpu", cpu_caps(memory_gb=16))]
    reason = unschedulable_reason(SIM, Requirements(hardware=[CUDA], min_memory_gb=64), fleet)
    assert reason == (
        "hardware: needs one of [cuda]; connected workers offer [cpu]; "
        "also min_memory_gb: needs 64; the largest connected worker has 16"
    )


def test_no_single_worker_meets_all() -> None:
    fleet = [
        worker("small-gpu", cuda_caps(memory_gb=16)),
        worker("big-cpu", cpu_caps(memory_gb=512)),
    ]
    reason = unschedulable_reason(SIM, Requirements(hardware=[CUDA], min_memory_gb=64), fleet)
    assert reason == (
        "no single connected worker meets all of [hardware, min_memory_gb] "
        "(each is met by some worker)"
    )


def test_tags_met_separately_but_never_together() -> None:
    fleet = [worker("a", cpu_caps(tags={"rack": "b"})), worker("b", cpu_caps(tags={"zone": "x"}))]
    reason = unschedulable_reason(SIM, Requirements(tags={"rack": "b", "zone": "x"}), fleet)
    assert reason == "tags: no connected worker has all of rack=b, zone=x"


def test_fleet_reason_does_not_depend_on_worker_order() -> None:
    fleet = [
        worker("a", cpu_caps(hardware=["cpu", "openvino"])),
        worker("b", caps(hardware=["mps"])),
        worker("c", cpu_caps()),
    ]
    requirements = Requirements(hardware=[CUDA, HardwareKind.ROCM])
    forward = unschedulable_reason(SIM, requirements, fleet)
    assert forward == unschedulable_reason(SIM, requirements, fleet[::-1])
    assert (
        forward
        == "hardware: needs one of [cuda, rocm]; connected workers offer [cpu, mps, openvino]"
    )


# --- best fit ---------------------------------------------------------------------------------


def test_capability_rank_orders_least_capable_first() -> None:
    small_cpu = cpu_caps(memory_gb=8, cores=4)
    big_cpu = cpu_caps(memory_gb=512, cores=128)
    t4 = cuda_caps("T4", 16, 7.5, memory_gb=64)
    h200 = cuda_caps("H200", 141, 9.0, memory_gb=64)
    ranked = sorted([h200, big_cpu, t4, small_cpu], key=capability_rank)
    assert ranked == [small_cpu, big_cpu, t4, h200]
    assert capability_rank(small_cpu) == (False, 0.0, 0.0, 8.0, 4)
