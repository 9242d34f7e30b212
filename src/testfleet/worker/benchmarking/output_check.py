"""The output check: a backend's outputs against torch's on the same weights and inputs.

Callers: the runner's backend path (:mod:`.backend_run`) once per run, before
the first batch size, with torch's outputs and the backend's for the same fixed
inputs; the result goes in the ``setup`` line, and the parent's
:func:`~testfleet.worker.benchmarking.outcome.judge` fails a run whose check did
not pass with ``output_mismatch`` (its figures are still reported: a fast wrong
answer is shown, and counted as a failure).

Rule: an element agrees when ``|backend - torch| <= tolerance * max(1, |torch|)``,
i.e. an absolute tolerance for values within [-1, 1] and a relative one beyond
(logits in the tens are compared to their size, not to 1e-3 absolutely). The
check reports the largest absolute difference and the largest scaled one
(``max_rel_diff``); it passes when the scaled one is within the tolerance. A
shape that differs, or a value that is not finite where torch's is, fails it
outright. Pure NumPy: unit-tested with made-up arrays.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from testfleet.domain.benchmark import OutputCheck

if TYPE_CHECKING:
    import numpy.typing as npt

#: What a difference that is not a number (NaN, infinity) is reported as:
#: larger than any tolerance, and storable (JSON has no infinity).
NOT_FINITE_DIFF = sys.float_info.max


def compare_outputs(
    reference: Sequence[npt.NDArray[Any]],
    outputs: Sequence[npt.NDArray[Any]],
    *,
    tolerance: float,
    batch_size: int | None = None,
) -> tuple[OutputCheck, str | None]:
    """The check, and why it failed (None when it passed)."""
    import numpy as np

    if len(reference) != len(outputs):
        return _failed(tolerance, len(outputs), batch_size), (
            f"the backend gave {len(outputs)} output(s), torch {len(reference)}"
        )
    max_abs = 0.0
    max_rel = 0.0
    for index, (expected, got) in enumerate(zip(reference, outputs, strict=True)):
        want = np.asarray(expected, dtype=np.float64)
        have = np.asarray(got, dtype=np.float64)
        if want.shape != have.shape:
            return _failed(tolerance, len(outputs), batch_size), (
                f"output {index}: shape {tuple(have.shape)}, torch's is {tuple(want.shape)}"
            )
        if want.size == 0:
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(have - want)
            scaled = diff / np.maximum(np.abs(want), 1.0)
        if not np.all(np.isfinite(diff)):
            return _failed(tolerance, len(outputs), batch_size), (
                f"output {index}: {int(np.sum(~np.isfinite(diff)))} value(s) not finite "
                "where torch's are, or the other way round"
            )
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float(scaled.max()))
    passed = max_rel <= tolerance
    check = OutputCheck(
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        tolerance=tolerance,
        passed=passed,
        outputs_compared=len(outputs),
        batch_size=batch_size,
    )
    if passed:
        return check, None
    return check, (
        f"outputs differ from torch's on the same weights and inputs: largest difference "
        f"{max_abs:.3g} (scaled {max_rel:.3g}) > output_tolerance {tolerance:g}"
    )


def _failed(tolerance: float, compared: int, batch_size: int | None) -> OutputCheck:
    return OutputCheck(
        max_abs_diff=NOT_FINITE_DIFF,
        tolerance=tolerance,
        passed=False,
        outputs_compared=compared,
        batch_size=batch_size,
    )
