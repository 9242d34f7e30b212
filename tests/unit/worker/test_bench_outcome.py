"""The parent's verdict from the runner's lines and its ending: every status rule, no processes."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from testfleet.domain.benchmark import (
    BatchSizeError,
    BatchSizeMeasurement,
    BenchmarkConfig,
    BenchmarkOutcome,
    benchmark_rows,
)
from testfleet.domain.enums import ErrorClass, HardwareKind, ResultStatus
from testfleet.worker.benchmarking.metrics import MetricSeries
from testfleet.worker.benchmarking.outcome import RunnerReport, Verdict, judge
from testfleet.worker.benchmarking.protocol import BatchLine, FatalLine, FinalLine, SetupLine
from testfleet.worker.executors.process_group import Ending

OOM = ErrorClass.OUT_OF_MEMORY


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def measured(size: int, throughput: float) -> BatchLine:
    return BatchLine(
        batch_size=size,
        measurement=BatchSizeMeasurement(
            latency_ms=size * 1000 / throughput,
            latency_p50_ms=1.0,
            latency_p90_ms=1.5,
            latency_p99_ms=2.0,
            throughput_items_per_second=throughput,
            memory_mb=100.0 * size,
            iterations=5,
        ),
        metrics={
            "cpu_percent": MetricSeries(count=2, total=100.0, maximum=60.0),
            "process_rss_mb": MetricSeries(count=2, total=200.0, maximum=100.0 * size),
        },
    )


def failed(size: int, error_class: ErrorClass, message: str = "boom") -> BatchLine:
    return BatchLine(
        batch_size=size, error=BatchSizeError(error_class=error_class, message=message)
    )


def setup(planned: list[int]) -> SetupLine:
    return SetupLine(
        model_source="config",
        device="cpu",
        device_name="Test CPU",
        planned_batch_sizes=planned,
        conditions={"torch_version": "2.13.0", "threads": 2},
    )


def report(*lines: Any) -> RunnerReport:
    collected = RunnerReport()
    for line in lines:
        collected.add(line)
    return collected


def verdict(
    lines: RunnerReport,
    *,
    batch_sizes: list[int] | str = "auto",
    ending: Ending = Ending.EXITED,
    returncode: int | None = 0,
    ended_by_limit: tuple[ErrorClass, str] | None = None,
    memory_note: str | None = None,
) -> Verdict:
    config = BenchmarkConfig(model="gpt2", batch_sizes=batch_sizes)
    return judge(
        config=config,
        hardware=HardwareKind.CPU,
        report=lines,
        ending=ending,
        returncode=returncode,
        timeout_seconds=30,
        metrics_interval_seconds=0.2,
        ended_by_limit=ended_by_limit,
        memory_note=memory_note,
    )


def outcome(v: Verdict) -> BenchmarkOutcome:
    return BenchmarkOutcome.model_validate(v.results)


def test_all_sizes_measured_completes_with_the_optimal_size() -> None:
    v = verdict(
        report(
            setup([1, 2, 4]),
            measured(1, 100.0),
            measured(2, 180.0),
            measured(4, 170.0),
            FinalLine(stop_reason="completed", conditions={"load_after": {"cpu_percent": 1.0}}),
        ),
        batch_sizes=[1, 2, 4],
    )
    assert v.status is ResultStatus.COMPLETED
    assert v.error is None
    o = outcome(v)
    assert list(o.batch_sizes) == ["1", "2", "4"]
    assert o.optimal_batch_size == 2
    assert o.errors == {}
    assert o.device_name == "Test CPU"
    assert o.auto_batch_size is False
    assert o.conditions["torch_version"] == "2.13.0"
    assert o.conditions["load_after"] == {"cpu_percent": 1.0}
    assert o.conditions["stop_reason"] == "completed"
    assert v.hardware_metrics["memory_usage_mb"] == 400.0
    assert v.hardware_metrics["cpu_percent"] == 50.0


def test_out_of_memory_at_the_large_end_still_completes() -> None:
    v = verdict(
        report(
            setup([1, 2, 4, 8]),
            measured(1, 100.0),
            measured(2, 150.0),
            failed(4, OOM, "CUDA out of memory"),
            FinalLine(stop_reason="out_of_memory", skipped_batch_sizes=[8]),
        )
    )
    assert v.status is ResultStatus.COMPLETED
    o = outcome(v)
    assert set(o.batch_sizes) == {"1", "2"}
    assert o.errors["4"].error_class is OOM
    assert "8" not in o.errors  # auto simply ends at the first size that does not fit
    assert o.optimal_batch_size == 2


def test_an_explicit_list_says_why_the_sizes_after_an_oom_are_missing() -> None:
    v = verdict(
        report(
            setup([1, 4, 16, 64]),
            measured(1, 100.0),
            failed(4, OOM),
            FinalLine(stop_reason="out_of_memory", skipped_batch_sizes=[16, 64]),
        ),
        batch_sizes=[1, 4, 16, 64],
    )
    assert v.status is ResultStatus.COMPLETED
    errors = outcome(v).errors
    assert set(errors) == {"4", "16", "64"}
    assert errors["16"].error_class is OOM
    assert "not run" in errors["16"].message


def test_oom_at_the_first_size_fails_as_out_of_memory_but_keeps_the_outcome() -> None:
    v = verdict(
        report(setup([1, 2]), failed(1, OOM, "OOM"), FinalLine(stop_reason="out_of_memory"))
    )
    assert v.status is ResultStatus.FAILED
    assert v.error == (OOM, "batch size 1: OOM")
    o = outcome(v)
    assert o.batch_sizes == {}
    assert o.optimal_batch_size is None


def test_an_error_other_than_oom_fails_the_attempt() -> None:
    v = verdict(
        report(
            setup([1, 2]),
            measured(1, 100.0),
            failed(2, ErrorClass.TASK_FAILURE, "shape mismatch"),
            FinalLine(stop_reason="error"),
        ),
        batch_sizes=[1, 2],
    )
    assert v.status is ResultStatus.FAILED
    assert v.error == (ErrorClass.TASK_FAILURE, "batch size 2: shape mismatch")
    assert outcome(v).batch_sizes["1"].throughput_items_per_second == 100.0


def test_a_fatal_line_fails_with_its_class_and_no_outcome() -> None:
    fatal = FatalLine(error_class=ErrorClass.INVALID_CONFIG, message="unknown model 'bort'")
    v = verdict(report(fatal), returncode=2)
    assert v.status is ResultStatus.FAILED
    assert v.error == (ErrorClass.INVALID_CONFIG, "unknown model 'bort'")
    assert v.results == {}
    assert v.hardware_metrics == {}


def test_sigkill_after_some_sizes_marks_the_next_size_out_of_memory() -> None:
    v = verdict(
        report(setup([1, 2, 4, 8]), measured(1, 100.0), measured(2, 190.0)),
        returncode=-signal.SIGKILL,
    )
    assert v.status is ResultStatus.COMPLETED
    o = outcome(v)
    assert set(o.batch_sizes) == {"1", "2"}
    assert o.errors["4"].error_class is OOM
    assert "out-of-memory killer" in o.errors["4"].message
    assert "8" not in o.errors
    assert o.optimal_batch_size == 2
    assert o.conditions["stop_reason"] == "runner_died"


def test_sigkill_in_an_explicit_list_also_explains_the_sizes_after_it() -> None:
    v = verdict(
        report(setup([1, 2, 4]), measured(1, 100.0)),
        batch_sizes=[1, 2, 4],
        returncode=-signal.SIGKILL,
    )
    errors = outcome(v).errors
    assert errors["2"].error_class is OOM
    assert errors["4"].error_class is OOM
    assert "not run" in errors["4"].message


def test_sigkill_before_any_size_fails_as_out_of_memory() -> None:
    v = verdict(report(setup([1, 2])), returncode=-signal.SIGKILL)
    assert v.status is ResultStatus.FAILED
    assert v.error is not None
    assert v.error[0] is OOM
    assert "1" in outcome(v).errors

    before_setup = verdict(report(), returncode=-signal.SIGKILL)
    assert before_setup.status is ResultStatus.FAILED
    assert before_setup.error is not None
    assert before_setup.error[0] is OOM
    assert before_setup.results == {}


def test_any_other_death_is_an_infrastructure_failure() -> None:
    v = verdict(report(setup([1, 2]), measured(1, 100.0)), returncode=-signal.SIGSEGV)
    assert v.status is ResultStatus.FAILED
    assert v.error == (ErrorClass.INFRASTRUCTURE, "batch size 2: the runner was killed by SIGSEGV")
    assert set(outcome(v).batch_sizes) == {"1"}

    crashed = verdict(report(), returncode=1)
    assert crashed.status is ResultStatus.FAILED
    assert crashed.error is not None
    assert crashed.error[0] is ErrorClass.INFRASTRUCTURE
    assert "code 1" in crashed.error[1]


@pytest.mark.parametrize(
    ("ending", "status", "error_class"),
    [
        (Ending.CANCELLED, ResultStatus.CANCELLED, ErrorClass.CANCELLED),
        (Ending.TIMED_OUT, ResultStatus.TIMED_OUT, ErrorClass.TIMEOUT),
    ],
)
def test_cancel_and_timeout_keep_what_was_measured(
    ending: Ending, status: ResultStatus, error_class: ErrorClass
) -> None:
    v = verdict(
        report(setup([1, 2, 4]), measured(1, 100.0)),
        batch_sizes=[1, 2, 4],
        ending=ending,
        returncode=-signal.SIGTERM,
    )
    assert v.status is status
    assert v.error is not None
    assert v.error[0] is error_class
    assert "1 batch size(s) measured" in v.error[1]
    o = outcome(v)
    assert set(o.batch_sizes) == {"1"}
    assert o.errors == {}  # the sizes not reached are not errors of their own
    assert o.conditions["stop_reason"] == ending.value


def test_the_outcome_turns_into_benchmark_rows() -> None:
    v = verdict(
        report(
            setup([1, 2, 4]),
            measured(1, 100.0),
            measured(2, 150.0),
            failed(4, OOM),
            FinalLine(stop_reason="out_of_memory"),
        )
    )
    assert v.status is ResultStatus.COMPLETED
    rows = benchmark_rows(
        attempt_id=1,
        task_id="t",
        worker_id="w",
        recorded_time=0.0,
        results=v.results,
        is_simulated=False,
    )
    assert [(r.batch_size, r.error_class) for r in rows] == [
        (1, None),
        (2, None),
        (4, "out_of_memory"),
    ]
    assert rows[0].torch_version == "2.13.0"


# --------------------------------------------------------------------------- held to limits

CGROUP_KILL = (OOM, "killed for passing its memory limit of 1 GiB (cgroup_v2)")
NOTE = "memory limit of 1 GiB (RLIMIT_DATA)"


def test_a_limit_that_ended_the_runner_replaces_the_guess_from_its_exit() -> None:
    lines = report(setup([1, 2, 4]), measured(1, 100.0))
    v = verdict(lines, returncode=-signal.SIGKILL, ended_by_limit=CGROUP_KILL, memory_note=NOTE)
    assert v.status is ResultStatus.COMPLETED
    # The cause is known: no "probably", and the limit's own message is not noted twice.
    assert outcome(v).errors["2"] == BatchSizeError(error_class=OOM, message=CGROUP_KILL[1])


def test_a_disk_limit_that_ended_the_runner_fails_it_resource_limit() -> None:
    disk = (ErrorClass.RESOURCE_LIMIT, "work directory passed its disk limit of 1 MiB")
    v = verdict(report(setup([1, 2])), returncode=-signal.SIGKILL, ended_by_limit=disk)
    assert v.status is ResultStatus.FAILED
    assert v.error == (ErrorClass.RESOURCE_LIMIT, f"batch size 1: {disk[1]}")


def test_out_of_memory_errors_the_runner_reported_name_the_memory_limit() -> None:
    lines = report(setup([1, 2]), failed(1, OOM, "MemoryError"), FinalLine(stop_reason="oom"))
    v = verdict(lines, memory_note=NOTE)
    assert v.error == (OOM, f"batch size 1: MemoryError (under its {NOTE})")
    # Other classes are not about memory, and say nothing of it.
    other = verdict(
        report(setup([1]), failed(1, ErrorClass.TASK_FAILURE), FinalLine(stop_reason="done")),
        memory_note=NOTE,
    )
    assert other.error == (ErrorClass.TASK_FAILURE, "batch size 1: boom")


def test_a_fatal_out_of_memory_names_the_memory_limit() -> None:
    fatal = FatalLine(error_class=OOM, message="MemoryError while loading the model")
    v = verdict(report(fatal), returncode=1, memory_note=NOTE)
    assert v.error == (OOM, f"MemoryError while loading the model (under its {NOTE})")
