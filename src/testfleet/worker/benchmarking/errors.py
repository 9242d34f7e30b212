"""Classified benchmark failures, and what counts as running out of memory.

Callers: every runner module raises :class:`BenchmarkError` for a problem it
can name (unknown model, precision the device cannot run, device missing); the
runner turns any exception at a batch size into a :class:`BatchSizeError` with
:func:`classify_batch_error`, and any exception before the first batch size
into a ``fatal`` line with :func:`classify_setup_error`.

Classes chosen (see ``domain.enums.ErrorClass``):

* ``invalid_config``: the task asks for something that cannot work however
  often it is retried on this kind of hardware: an unknown model or config
  key, a sequence longer than the model's positions, a precision the device
  cannot run (fp16/bf16 failing a probe op, bf16 without native support on a
  CUDA GPU, int8 off the CPU). The fix is in the task (or its requirements).
* ``infrastructure``: the worker cannot do what it advertised: the device is
  not available to torch, a library is missing, the runner crashed.
* ``out_of_memory``: CUDA/HIP/MPS out-of-memory errors, ``MemoryError``, the
  CPU allocator's "can't allocate memory", or the child killed by SIGKILL after
  it had reported some batch sizes (most likely the kernel's OOM killer).
* ``task_failure``: anything else raised by the model's forward pass.
"""

from __future__ import annotations

from testfleet.domain.benchmark import BatchSizeError
from testfleet.domain.enums import ErrorClass

#: BatchSizeError.message is capped at 4 KiB.
MAX_MESSAGE_CHARS = 4000

#: Lower-case fragments of the messages torch's allocators raise when memory runs out.
OUT_OF_MEMORY_MARKERS = (
    "out of memory",  # CUDA, HIP, MPS: "CUDA out of memory", "MPS backend out of memory"
    "can't allocate memory",  # DefaultCPUAllocator
    "cannot allocate memory",  # ENOMEM from the OS
    "failed to allocate memory",
)

#: The explanation used when the child dies by SIGKILL that nobody here sent.
KILLED_MESSAGE = "the runner was killed by SIGKILL, probably by the out-of-memory killer"


class BenchmarkError(Exception):
    """A failure the runner can name and classify."""

    def __init__(self, error_class: ErrorClass, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message


def clip(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 3] + "..."


def is_out_of_memory(exc: BaseException) -> bool:
    """True for every way torch and Python report exhausted memory.

    Matched by class name as well as message, so this module needs no torch
    import: ``torch.OutOfMemoryError`` (alias ``torch.cuda.OutOfMemoryError``)
    is a RuntimeError subclass whose message says "out of memory".
    """
    if isinstance(exc, MemoryError):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    if isinstance(exc, RuntimeError | OSError):
        text = str(exc).lower()
        return any(marker in text for marker in OUT_OF_MEMORY_MARKERS)
    return False


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    # The first line of a CUDA OOM message says it all; the rest is allocator advice.
    first = text.splitlines()[0] if text else ""
    return clip(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def classify_batch_error(exc: BaseException) -> BatchSizeError:
    """The error recorded for one batch size."""
    if isinstance(exc, BenchmarkError):
        return BatchSizeError(error_class=exc.error_class, message=clip(exc.message))
    if is_out_of_memory(exc):
        return BatchSizeError(error_class=ErrorClass.OUT_OF_MEMORY, message=describe(exc))
    return BatchSizeError(error_class=ErrorClass.TASK_FAILURE, message=describe(exc))


def classify_setup_error(exc: BaseException) -> BatchSizeError:
    """The error of a run that failed before its first batch size (building the model...).

    An unexpected exception here is the worker's problem (a broken install, a
    bug), not the task's, so it is ``infrastructure`` unless memory ran out.
    """
    if isinstance(exc, BenchmarkError):
        return BatchSizeError(error_class=exc.error_class, message=clip(exc.message))
    if is_out_of_memory(exc):
        return BatchSizeError(error_class=ErrorClass.OUT_OF_MEMORY, message=describe(exc))
    if isinstance(exc, ImportError):
        return BatchSizeError(
            error_class=ErrorClass.INFRASTRUCTURE,
            message=clip(f"benchmark dependencies are not importable: {describe(exc)}"),
        )
    return BatchSizeError(error_class=ErrorClass.INFRASTRUCTURE, message=describe(exc))
