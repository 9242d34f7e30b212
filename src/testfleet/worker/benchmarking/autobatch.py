"""The batch-size sweep and its stopping rules (pure; ``measure`` is injected).

Callers: the runner sweeps the task's batch sizes with a ``measure`` that runs
and reports one size; the parent's outcome uses :func:`best_batch_size` and
:func:`planned_batch_sizes` to fill in ``optimal_batch_size`` and to name the
size a killed child was working on.

Rules:

* Sizes run in ascending order: the task's list as given (sorted by its
  config model), or for ``batch_sizes: "auto"`` the powers of two 1, 2, 4, ...
  up to ``max_batch_size``.
* The first out-of-memory stops the sweep: a larger batch will not fit either.
  The sizes measured so far are kept. For an explicit list the sizes not run
  are reported as skipped (the outcome marks them out_of_memory with a message
  saying so); ``auto`` simply ends there.
* Any other error at a size stops the sweep as well (the next size would fail
  the same way, only slower).
* ``auto`` also stops on a plateau: a measured size *gains* when its throughput
  exceeds the best so far by more than ``min_gain`` (3 %); after ``patience``
  (2) sizes in a row that do not gain, the curve has flattened and larger
  batches would only add latency and memory. Comparing with the best so far,
  not the previous size, keeps one noisy dip from resetting the count.
* The optimal batch size is the one with the highest throughput among those
  measured; a tie goes to the smaller size (same rate, less latency and memory).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from testfleet.domain.enums import ErrorClass

#: A size must beat the best throughput so far by more than this to count as a gain.
DEFAULT_MIN_GAIN = 0.03
#: Sizes in a row without a gain before ``auto`` stops.
DEFAULT_PATIENCE = 2


class StopReason(StrEnum):
    """Why a sweep ended."""

    COMPLETED = "completed"  # every planned size was run
    OUT_OF_MEMORY = "out_of_memory"
    ERROR = "error"
    PLATEAU = "plateau"


@dataclass(frozen=True)
class Trial:
    """One size's result as the sweep sees it: a throughput, or the class of its error."""

    batch_size: int
    throughput: float | None = None
    error_class: ErrorClass | None = None

    @property
    def measured(self) -> bool:
        return self.throughput is not None and self.error_class is None


@dataclass
class Sweep:
    trials: list[Trial] = field(default_factory=list)
    stop_reason: StopReason = StopReason.COMPLETED
    #: Planned sizes not run because the sweep stopped on an error (not on a plateau).
    skipped: list[int] = field(default_factory=list)


def auto_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two from 1 up to and including ``max_batch_size`` if it is one."""
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be at least 1")
    sizes = [1]
    while sizes[-1] * 2 <= max_batch_size:
        sizes.append(sizes[-1] * 2)
    return sizes


def planned_batch_sizes(batch_sizes: Sequence[int] | str, max_batch_size: int) -> list[int]:
    """The sizes a sweep will try, in order (``"auto"`` expands to powers of two)."""
    if isinstance(batch_sizes, str):
        return auto_batch_sizes(max_batch_size)
    return sorted(batch_sizes)


def sweep(
    sizes: Sequence[int],
    measure: Callable[[int], Trial],
    *,
    stop_on_plateau: bool,
    min_gain: float = DEFAULT_MIN_GAIN,
    patience: int = DEFAULT_PATIENCE,
) -> Sweep:
    """Run ``measure`` on each size in order until one of the rules above stops it."""
    result = Sweep()
    best: float | None = None
    strikes = 0
    for index, size in enumerate(sizes):
        trial = measure(size)
        result.trials.append(trial)
        if not trial.measured:
            oom = trial.error_class is ErrorClass.OUT_OF_MEMORY
            result.stop_reason = StopReason.OUT_OF_MEMORY if oom else StopReason.ERROR
            result.skipped = list(sizes[index + 1 :])
            return result
        assert trial.throughput is not None  # measured
        if best is None or trial.throughput > best * (1.0 + min_gain):
            strikes = 0
        else:
            strikes += 1
        best = trial.throughput if best is None else max(best, trial.throughput)
        if stop_on_plateau and strikes >= patience and index + 1 < len(sizes):
            result.stop_reason = StopReason.PLATEAU
            return result
    return result


def best_batch_size(throughputs: Mapping[int, float]) -> int | None:
    """The size with the highest throughput; the smaller one on a tie; None if none."""
    if not throughputs:
        return None
    return min(throughputs, key=lambda size: (-throughputs[size], size))
