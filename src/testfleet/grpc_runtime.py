"""``grpc``, imported with its fork handlers off: import it from here, never directly.

Callers: every testfleet module that uses gRPC (the worker channel's gRPC
transport on both sides, ``protocol/grpc_frames.py``).

Why: a worker starts its tasks with ``fork`` and runs Python in the child
before ``exec`` (``preexec_fn``: resource limits, the process mark). With
gRPC's fork support on (the core's default in these wheels), the child ran
gRPC's at-fork handler against the parent's poller state and aborted
(``ev_epoll1_linux.cc: Check failed: next_worker->state == KICKED``, the task
killed by SIGABRT) whenever a gRPC stream was busy at the moment of the fork.
No child of testfleet uses the parent's gRPC channels (they ``exec`` at once),
so the handlers have nothing to do. The variable is read when gRPC loads, so it
is set here first. Tasks inherit it; one that forks with gRPC channels open
sets it itself.
"""

from __future__ import annotations

import os

#: gRPC's own switch for its fork handlers.
FORK_SUPPORT_VARIABLE = "GRPC_ENABLE_FORK_SUPPORT"

os.environ.setdefault(FORK_SUPPORT_VARIABLE, "0")

import grpc as grpc  # noqa: E402 - after the variable, on purpose
import grpc.aio as aio  # noqa: E402

__all__ = ["FORK_SUPPORT_VARIABLE", "aio", "grpc"]
