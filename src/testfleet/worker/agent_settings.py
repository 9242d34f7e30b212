"""What a worker agent is told at start: where the coordinator is, who it is,
and how it paces reconnects, reports and shutdown; and the refusals it stops on.

Callers: ``testfleet worker`` (``cli/processes.py``) builds :class:`AgentSettings`
from its flags, the in-process fleet and the dispatch benchmark build them
directly, and :class:`~testfleet.worker.agent.WorkerAgent` reads them. Kept
apart from the agent so that module holds only its connection loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from testfleet.protocol.messages import Codec, ProtocolErrorCode

#: Refusals that reconnecting cannot fix: the agent stops and says why.
#: ``worker_id_in_use`` is not one: the id's other connection is declared gone
#: once its socket closes or it falls silent (after a coordinator restart the
#: old process may even be this one's predecessor), so the agent retries with
#: backoff and gets in then (issue 12, "Identity after restarts").
FATAL_CODES = frozenset(
    {
        ProtocolErrorCode.UNSUPPORTED_VERSION,
        ProtocolErrorCode.UNAUTHORIZED,
    }
)
#: Results per frame when re-sending a backlog after a reconnect.
RESULT_BATCH = 500
#: Test records per ``tests`` frame (the message's limit).
TEST_REPORT_BATCH = 10_000
#: Finished tests wait this long to share a ``tests`` frame: each frame costs
#: the coordinator a turn and (usually) a commit, and a fraction of a second
#: changes nothing for progress or for what a lost worker loses.
TEST_REPORT_LINGER_SECONDS = 0.25
#: At stop: how long running attempts get to finish after being cancelled, and
#: how long their results then wait for the coordinator's ack.
STOP_ATTEMPTS_SECONDS = 10.0
STOP_ACKS_SECONDS = 5.0


class WorkerRefusedError(RuntimeError):
    """The coordinator refused this worker for a reason retrying cannot fix."""


def channel_url(coordinator_url: str) -> str:
    """``http://host:port`` → ``ws://host:port/api/v1/workers/connect`` (https → wss);
    a gRPC address (``grpc(s)://host:port``) is the channel's address as it is."""
    url = coordinator_url.rstrip("/")
    if url.startswith(("grpc://", "grpcs://")):
        return url
    if url.startswith("https://"):
        url = "wss://" + url[len("https://") :]
    elif url.startswith("http://"):
        url = "ws://" + url[len("http://") :]
    elif not url.startswith(("ws://", "wss://")):
        url = "ws://" + url
    return url + "/api/v1/workers/connect"


@dataclass
class AgentSettings:
    coordinator_url: str
    worker_id: str
    slots: int = 1
    codec: Codec = Codec.JSON
    work_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "testfleet")
    backoff_base_seconds: float = 0.25
    #: Below the coordinator's default heartbeat timeout (15 s), so a worker
    #: that waited out an outage still comes back in time to keep its attempts.
    backoff_cap_seconds: float = 10.0
    #: How long to wait for the coordinator to answer ``hello``.
    welcome_timeout_seconds: float = 15.0
    #: On :meth:`WorkerAgent.stop`: how long running attempts may go on
    #: finishing before the rest are cancelled and handed back. ``testfleet
    #: worker --shutdown-grace`` sets it (30 s by default there); 0 here, so the
    #: in-process fleet and the dispatch benchmark stop their agents at once.
    shutdown_grace_seconds: float = 0.0
