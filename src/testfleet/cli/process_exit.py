"""Ending the ``testfleet`` process without the interpreter's teardown.

Callers: ``cli/app.py``: :func:`main` (the console script and ``python -m
testfleet``) calls :func:`as_process`, and ``testfleet run`` ends through
:func:`exit_now` once pytest has returned.

Why: after ``testfleet run`` has printed pytest's summary and written its
reports, the interpreter's teardown (deallocating every module and object
that pytest, pydantic, httpx and the run loaded) took 0.3 s of CPU on the
2-core development machine and 0.7-1.3 s of wall time there under load
(measured: exit status 0.35-1.3 s after the last ``atexit`` handler). That
is all of the user's wait after the summary, and every fleet worker idles
through it. So the command runs the ``atexit`` handlers (logging's flush,
anything a conftest or plugin registered), flushes stdout and stderr, and
ends with ``os._exit``. Only in the real process: a test that invokes the
app in-process (``CliRunner``) gets the ordinary ``typer.Exit``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import NoReturn

import typer

#: Set by :func:`as_process` (the console script): this interpreter ends when
#: the command does, so skipping its teardown loses nothing.
_owns_process = False


def as_process() -> None:
    """Mark this interpreter as the command's own process (called by ``main``)."""
    global _owns_process
    _owns_process = True


def exit_now(code: int) -> NoReturn:
    """End the command with ``code``: at once in the real process (after the
    ``atexit`` handlers and flushing the standard streams), else ``typer.Exit``."""
    if not _owns_process:
        raise typer.Exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken pipe: nothing left to keep.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
