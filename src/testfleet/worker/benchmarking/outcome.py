"""The parent's side: the runner's lines and its ending in, the result's verdict out (pure).

Callers: the benchmark executor collects every parsed line in a
:class:`RunnerReport` while the child runs, then calls :func:`judge` with how
the child ended. No I/O here, so every rule below is unit-tested with
hand-made lines.

Status rules, first match wins:

1. cancelled by the agent: ``cancelled``; timeout: ``timed_out``. Either way
   the sizes measured before are kept in ``results``.
2. a ``fatal`` line (the run could not start: unknown model or config key,
   precision the device cannot run, device missing): ``failed`` with its class.
3. the child ended without its ``final`` line: the size it was working on (the
   first planned size it had not reported) gets the error. Killed by SIGKILL
   that we did not send: ``out_of_memory`` ("probably the out-of-memory
   killer"); any other death: ``infrastructure``. Before any ``setup`` line
   there is no size, and that error fails the attempt directly.
4. any size failed for a reason other than out of memory: ``failed`` with the
   first such error (smallest size).
5. at least one size measured: ``completed``, even when larger sizes ran out of
   memory: finding where memory ends is part of a sweep, and those sizes are
   listed in ``results.errors``. For an explicit list the sizes not run after
   an out-of-memory are listed too, marked out_of_memory ("not run: ...").
6. nothing measured (the smallest size ran out of memory): ``failed`` with
   ``out_of_memory``.

A run that would be ``completed`` but whose ``setup`` line carries an output
check that did not pass (a non-torch backend's outputs differ from torch's,
issue 15) is ``failed`` with ``output_mismatch``: its figures stay in
``results``, with the check.

Where the worker held the runner to ``requirements.resources``, the executor
passes what it knows: ``ended_by_limit``, a limit that ended the child
(``AttemptLimits.verdict``), replaces the guess from the exit status in rule 3
(so a runner killed by its memory cgroup, or one whose allocation failed at
its rlimit, is ``out_of_memory`` with the limit in the message, and one past
its disk limit ``resource_limit``); ``memory_note`` (``memory limit of 64 MiB
(RLIMIT_DATA)``) is added to every out-of-memory error the runner reported
itself, which the limit most likely caused.

``results`` holds a ``BenchmarkOutcome`` whenever the runner got as far as its
``setup`` line; a run refused before that reports ``{}`` (there is no device
or model to describe). ``optimal_batch_size`` is the best throughput among the
measured sizes (:func:`~testfleet.worker.benchmarking.autobatch.best_batch_size`),
computed here so that a killed child still gets one.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

from testfleet.domain.benchmark import (
    BatchSizeError,
    BatchSizeMeasurement,
    BenchmarkConfig,
    BenchmarkOutcome,
)
from testfleet.domain.enums import ErrorClass, HardwareKind, ResultStatus
from testfleet.worker.benchmarking.autobatch import best_batch_size
from testfleet.worker.benchmarking.errors import KILLED_MESSAGE, clip
from testfleet.worker.benchmarking.metrics import hardware_metrics, merge_series
from testfleet.worker.benchmarking.protocol import BatchLine, FatalLine, FinalLine, SetupLine
from testfleet.worker.executors.process_group import Ending


@dataclass
class RunnerReport:
    """Every line the runner wrote, as it arrived."""

    setup: SetupLine | None = None
    batches: dict[int, BatchLine] = field(default_factory=dict)
    final: FinalLine | None = None
    fatal: FatalLine | None = None

    def add(self, line: SetupLine | BatchLine | FinalLine | FatalLine) -> None:
        if isinstance(line, SetupLine):
            self.setup = line
        elif isinstance(line, BatchLine):
            self.batches[line.batch_size] = line
        elif isinstance(line, FinalLine):
            self.final = line
        else:
            self.fatal = line


@dataclass(frozen=True)
class Verdict:
    status: ResultStatus
    error: tuple[ErrorClass, str] | None
    results: dict[str, Any]
    hardware_metrics: dict[str, Any]


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "the runner ended without an exit status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the runner was killed by {name}"
    return f"the runner exited with code {returncode} before finishing"


def death_error(
    returncode: int | None, ended_by_limit: tuple[ErrorClass, str] | None = None
) -> BatchSizeError:
    """The error of a child that ended without its final line: the limit that ended
    it where the worker knows of one, else a guess from the exit status."""
    if ended_by_limit is not None:
        error_class, message = ended_by_limit
        return BatchSizeError(error_class=error_class, message=clip(message))
    if returncode == -signal.SIGKILL:
        return BatchSizeError(error_class=ErrorClass.OUT_OF_MEMORY, message=KILLED_MESSAGE)
    return BatchSizeError(
        error_class=ErrorClass.INFRASTRUCTURE, message=clip(_describe_exit(returncode))
    )


def _noted(error: BatchSizeError, memory_note: str | None) -> BatchSizeError:
    """An out-of-memory error with the memory limit the runner was held to, if any."""
    if memory_note is None or error.error_class is not ErrorClass.OUT_OF_MEMORY:
        return error
    return BatchSizeError(
        error_class=error.error_class, message=clip(f"{error.message} (under its {memory_note})")
    )


def _collect(
    config: BenchmarkConfig,
    report: RunnerReport,
    ending: Ending,
    returncode: int | None,
    ended_by_limit: tuple[ErrorClass, str] | None = None,
    memory_note: str | None = None,
) -> tuple[dict[int, BatchSizeMeasurement], dict[int, BatchSizeError], BatchSizeError | None]:
    """Measured sizes, per-size errors, and an error of the whole run (died before setup)."""
    measured = {n: b.measurement for n, b in report.batches.items() if b.measurement is not None}
    errors = {
        n: _noted(b.error, memory_note)
        for n, b in report.batches.items()
        if b.error is not None and b.measurement is None
    }
    planned = report.setup.planned_batch_sizes if report.setup else []
    unreported = [n for n in planned if n not in report.batches]
    whole_run: BatchSizeError | None = None
    died = ending is Ending.EXITED and report.final is None and report.fatal is None
    if died:
        error = death_error(returncode, ended_by_limit)
        if ended_by_limit is None:
            error = _noted(error, memory_note)
        # After a reported error the sweep had stopped: the death is not about a size.
        if report.setup is None or not unreported or errors:
            whole_run = error
        else:
            errors[unreported[0]] = error
    if config.batch_sizes != "auto" and ending is Ending.EXITED:
        # Sizes an out-of-memory stopped the sweep before: say why they are missing.
        ooms = sorted(n for n, e in errors.items() if e.error_class is ErrorClass.OUT_OF_MEMORY)
        if ooms:
            for size in planned:
                if size > ooms[0] and size not in errors and size not in measured:
                    errors[size] = BatchSizeError(
                        error_class=ErrorClass.OUT_OF_MEMORY,
                        message=f"not run: batch size {ooms[0]} already ran out of memory",
                    )
    return dict(sorted(measured.items())), dict(sorted(errors.items())), whole_run


def _stop_reason(report: RunnerReport, ending: Ending) -> str:
    if ending is not Ending.EXITED:
        return ending.value
    if report.final is not None:
        return report.final.stop_reason
    return "fatal" if report.fatal is not None else "runner_died"


def _status(
    report: RunnerReport,
    ending: Ending,
    measured: dict[int, BatchSizeMeasurement],
    errors: dict[int, BatchSizeError],
    whole_run: BatchSizeError | None,
    timeout_seconds: float,
    memory_note: str | None = None,
) -> tuple[ResultStatus, tuple[ErrorClass, str] | None]:
    so_far = f" ({len(measured)} batch size(s) measured before)" if measured else ""
    if ending is Ending.CANCELLED:
        return ResultStatus.CANCELLED, (
            ErrorClass.CANCELLED,
            f"cancelled; process group terminated{so_far}",
        )
    if ending is Ending.TIMED_OUT:
        return ResultStatus.TIMED_OUT, (
            ErrorClass.TIMEOUT,
            f"timed out after {timeout_seconds:g} s; process group terminated{so_far}",
        )
    if report.fatal is not None:
        fatal = _noted(
            BatchSizeError(error_class=report.fatal.error_class, message=report.fatal.message),
            memory_note,
        )
        return ResultStatus.FAILED, (fatal.error_class, fatal.message)
    if whole_run is not None and not measured:
        return ResultStatus.FAILED, (whole_run.error_class, whole_run.message)
    for size, error in errors.items():
        if error.error_class is not ErrorClass.OUT_OF_MEMORY:
            return ResultStatus.FAILED, (error.error_class, f"batch size {size}: {error.message}")
    if whole_run is not None and whole_run.error_class is not ErrorClass.OUT_OF_MEMORY:
        return ResultStatus.FAILED, (whole_run.error_class, whole_run.message)
    if measured:
        return ResultStatus.COMPLETED, None
    if errors:
        size, error = next(iter(errors.items()))
        return ResultStatus.FAILED, (error.error_class, f"batch size {size}: {error.message}")
    return ResultStatus.FAILED, (ErrorClass.INFRASTRUCTURE, "the runner measured nothing")


def judge(
    *,
    config: BenchmarkConfig,
    hardware: HardwareKind,
    report: RunnerReport,
    ending: Ending,
    returncode: int | None,
    timeout_seconds: float,
    metrics_interval_seconds: float,
    ended_by_limit: tuple[ErrorClass, str] | None = None,
    memory_note: str | None = None,
) -> Verdict:
    """The attempt's status, error, ``results`` and ``hardware_metrics`` (rules above)."""
    measured, errors, whole_run = _collect(
        config, report, ending, returncode, ended_by_limit, memory_note
    )
    status, error = _status(
        report, ending, measured, errors, whole_run, timeout_seconds, memory_note
    )
    check = report.setup.output_check if report.setup is not None else None
    if status is ResultStatus.COMPLETED and check is not None and not check.passed:
        assert report.setup is not None
        message = report.setup.output_check_message or "outputs differ from torch's"
        status, error = (
            ResultStatus.FAILED,
            (
                ErrorClass.OUTPUT_MISMATCH,
                clip(f"{config.backend.value}: {message}"),
            ),
        )
    metrics = hardware_metrics(
        merge_series([line.metrics for line in report.batches.values()]),
        metrics_interval_seconds,
    )
    results: dict[str, Any] = {}
    if report.setup is not None:
        setup = report.setup
        conditions: dict[str, Any] = {
            **setup.conditions,
            **(report.final.conditions if report.final else {}),
            "planned_batch_sizes": setup.planned_batch_sizes,
            "stop_reason": _stop_reason(report, ending),
        }
        throughputs = {n: m.throughput_items_per_second for n, m in measured.items()}
        outcome = BenchmarkOutcome(
            model=config.model,
            model_source=setup.model_source,
            hardware=hardware,
            device=setup.device,
            device_name=setup.device_name,
            precision=config.precision,
            auto_batch_size=config.batch_sizes == "auto",
            batch_sizes={str(n): m for n, m in measured.items()},
            errors={str(n): e for n, e in errors.items()},
            optimal_batch_size=best_batch_size(throughputs),
            conditions=conditions,
            backend=config.backend,
            output_check=setup.output_check,
        )
        results = outcome.model_dump(mode="json")
    return Verdict(status=status, error=error, results=results, hardware_metrics=metrics)
