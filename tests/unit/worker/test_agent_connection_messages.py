"""What a worker says when it cannot reach its coordinator, at the default log level.

Three layers: the phrase for each kind of failure (built from the exceptions
the connection really raises), the reporter's summarising of repeats on a
fake clock, and the agent itself against real loopback servers that refuse,
answer HTTP 404, or refuse the hello (the scaffolding of
``test_agent_session.py``). Log records are awaited through an event set by a
handler, never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.http11 import Response

from testfleet.domain.enums import HardwareKind, TaskType
from testfleet.domain.hardware import WorkerCapabilities
from testfleet.protocol.codec import decode, encode
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Error,
    Hello,
    ProtocolErrorCode,
    Welcome,
)
from testfleet.testing import FakeClock
from testfleet.worker.agent import AgentSettings, WorkerAgent
from testfleet.worker.connection_report import (
    ChannelError,
    ConnectionReporter,
    describe_connection_failure,
)
from testfleet.worker.executors.registry import default_executors

URL = "ws://fleet.lan:8700/api/v1/workers/connect"
REPORT_LOGGER = "testfleet.worker.connection_report"


# ---------------------------------------------------------------- phrases


def status(code: int, content_type: str = "", location: str = "") -> InvalidStatus:
    headers = Headers()
    if content_type:
        headers["Content-Type"] = content_type
    if location:
        headers["Location"] = location
    return InvalidStatus(Response(code, "", headers, b"<html>page</html>"))


@pytest.mark.parametrize(
    ("exc", "phrase"),
    [
        (
            ConnectionRefusedError(111, "Connect call failed"),
            "connection refused: nothing listens at fleet.lan:8700",
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            "cannot resolve the host name 'fleet.lan' (Name or service not known)",
        ),
        (
            status(404, content_type="text/html"),
            f"not a testfleet coordinator (no worker channel at {URL}): HTTP 404",
        ),
        (status(403), f"HTTP 403: no worker channel at {URL} (not a testfleet coordinator"),
        (
            status(200, content_type="text/html; charset=utf-8"),
            f"not a testfleet coordinator (it answered HTTP 200 text/html at {URL}",
        ),
        (status(503), "HTTP 503: the coordinator, or a proxy in front of it, is failing"),
        (
            status(301, location="https://fleet.lan/"),
            "HTTP 301: redirected to https://fleet.lan/",
        ),
        (TimeoutError(), "no answer from fleet.lan:8700 within 10s"),
        (
            ChannelError("the coordinator refused the hello (invalid_message): bad"),
            "the coordinator refused the hello (invalid_message): bad",
        ),
        (
            ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            "TLS error: [SSL: WRONG_VERSION_NUMBER] wrong version number "
            "(is it a plain http:// coordinator?)",
        ),
        (OSError(113, "No route to host"), "fleet.lan:8700: No route to host"),
    ],
)
def test_each_failure_has_a_phrase(exc: BaseException, phrase: str) -> None:
    assert describe_connection_failure(exc, URL, 10.0).startswith(phrase)


def test_an_untrusted_certificate_says_so() -> None:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "self-signed certificate"
    assert describe_connection_failure(exc, URL, 10.0) == (
        "TLS: the coordinator's certificate is not trusted (self-signed certificate)"
    )


def test_a_server_that_hangs_up_without_http_is_named() -> None:
    exc = InvalidMessage("did not receive a valid HTTP response")
    exc.__cause__ = EOFError("connection closed while reading HTTP status line")
    assert describe_connection_failure(exc, URL, 10.0) == (
        "fleet.lan:8700 closed the connection without an HTTP answer"
    )


def test_the_page_an_http_server_sends_is_never_quoted() -> None:
    assert "page" not in describe_connection_failure(status(404), URL, 10.0)


# ---------------------------------------------------------------- summarising


def warning_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_repeats_are_summarised_and_changes_said_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=REPORT_LOGGER)
    clock = FakeClock()
    reporter = ConnectionReporter("w1", URL, clock.now, first_attempts=3, repeat_after=60)
    refused = "connection refused: nothing listens at fleet.lan:8700"
    for attempt in range(1, 21):  # 20 attempts, 10 s apart: 200 s
        reporter.attempt_failed(refused, attempt=attempt, retry_in=10.0)
        clock.advance(10)
    reporter.attempt_failed("HTTP 503: failing", attempt=21, retry_in=10.0)

    lines = warning_lines(caplog)
    assert lines[0] == (
        f"worker w1: cannot connect to {URL}: {refused}; retrying in 10.0s (attempt 1)"
    )
    assert [line.rsplit("(", 1)[1] for line in lines[1:3]] == ["attempt 2)", "attempt 3)"]
    # Then once a minute (attempts 9 and 15 are 60 s after the last line said).
    assert lines[3].endswith("(attempt 9; the same since attempt 1, said once per 60s)")
    assert lines[4].endswith("(attempt 15; the same since attempt 1, said once per 60s)")
    assert lines[5].endswith(": HTTP 503: failing; retrying in 10.0s (attempt 21)")
    assert len(lines) == 6
    # Every attempt is still in the log, at DEBUG.
    assert len(caplog.records) == 21


# ---------------------------------------------------------------- the agent


CAPS = WorkerCapabilities(
    hostname="h",
    os="Linux",
    python_version="3.11",
    hardware=[HardwareKind.CPU],
    task_types=[TaskType.SIMULATED],
)


class Said(logging.Handler):
    """Collects the reporter's WARNING lines and wakes a test waiting for ``count``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.changed.set()

    async def at_least(self, count: int) -> list[str]:
        while len(self.lines) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)
        return self.lines


@pytest.fixture
def said() -> Iterator[Said]:
    handler = Said()
    logger = logging.getLogger(REPORT_LOGGER)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@contextlib.asynccontextmanager
async def running(url: str, tmp_path: Path) -> AsyncIterator[WorkerAgent]:
    agent = WorkerAgent(
        AgentSettings(
            coordinator_url=url,
            worker_id="w1",
            work_dir=tmp_path,
            backoff_base_seconds=0.01,
            backoff_cap_seconds=0.02,
        ),
        CAPS,
        default_executors(),
        rng=random.Random(1),
    )
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_dead_address_is_said_with_the_backoff(said: Said, tmp_path: Path) -> None:
    port = closed_port()
    async with running(f"http://127.0.0.1:{port}", tmp_path):
        first, second = (await said.at_least(2))[:2]
    url = f"ws://127.0.0.1:{port}/api/v1/workers/connect"
    assert first.startswith(
        f"worker w1: cannot connect to {url}: connection refused: nothing listens at "
        f"127.0.0.1:{port}; retrying in 0.0"
    )
    assert first.endswith("s (attempt 1)")
    assert second.endswith("s (attempt 2)")


async def test_an_http_server_without_the_channel_is_not_a_coordinator(
    said: Said, tmp_path: Path
) -> None:
    def not_found(connection: ServerConnection, _: object) -> Response:
        return connection.respond(404, "<html>no such page</html>\n")

    async with serve(lambda _: asyncio.sleep(0), "127.0.0.1", 0, process_request=not_found) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        async with running(f"http://127.0.0.1:{port}", tmp_path):
            (line,) = (await said.at_least(1))[:1]
    url = f"ws://127.0.0.1:{port}/api/v1/workers/connect"
    assert f"not a testfleet coordinator (no worker channel at {url}): HTTP 404" in line
    assert "no such page" not in line


async def test_a_refused_hello_is_said_with_its_code_then_the_recovery(
    said: Said, tmp_path: Path
) -> None:
    hellos = 0

    async def coordinator(socket: ServerConnection) -> None:
        nonlocal hellos
        assert isinstance(decode(await socket.recv()), Hello)
        hellos += 1
        if hellos == 1:
            refusal = Error(code=ProtocolErrorCode.INVALID_MESSAGE, message="capabilities: bad")
            await socket.send(encode(refusal))
            return
        welcome = Welcome(
            protocol_version=PROTOCOL_VERSION,
            worker_id="w1",
            heartbeat_interval_seconds=30,
            heartbeat_timeout_seconds=60,
        )
        await socket.send(encode(welcome))
        await socket.wait_closed()

    async with serve(coordinator, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with running(f"http://127.0.0.1:{port}", tmp_path) as agent:
            refused, recovered = (await said.at_least(2))[:2]
            assert agent.connected.is_set()
    assert "the coordinator refused the hello (invalid_message): capabilities: bad" in refused
    assert refused.endswith("s (attempt 1)")
    url = f"ws://127.0.0.1:{port}/api/v1/workers/connect"
    assert recovered == f"worker w1: connected to {url} after 1 failed attempt(s)"


async def test_a_lost_session_is_said_and_reconnect_attempts_count_from_one(
    said: Said, tmp_path: Path
) -> None:
    sessions = 0

    async def coordinator(socket: ServerConnection) -> None:
        nonlocal sessions
        await socket.recv()
        sessions += 1
        if sessions == 1:  # welcome, then hang up; later sessions hang up at once
            welcome = Welcome(
                protocol_version=PROTOCOL_VERSION,
                worker_id="w1",
                heartbeat_interval_seconds=30,
                heartbeat_timeout_seconds=60,
            )
            await socket.send(encode(welcome))

    async with serve(coordinator, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with running(f"http://127.0.0.1:{port}", tmp_path):
            lost, failed = (await said.at_least(2))[:2]
    url = f"ws://127.0.0.1:{port}/api/v1/workers/connect"
    assert lost.startswith(f"worker w1: lost the connection to {url}: ")
    assert "; reconnecting in 0.0" in lost
    assert failed.startswith(f"worker w1: cannot connect to {url}: the connection closed")
    assert failed.endswith("s (attempt 1)")


# ---------------------------------------------------------------- a coordinator restart (1012)


def test_a_restart_close_is_info_until_the_restart_outlasts_its_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=REPORT_LOGGER)
    clock = FakeClock()
    reporter = ConnectionReporter(
        "w1", URL, clock.now, first_attempts=2, repeat_after=60, restart_grace=30
    )
    reporter.session_ended("the connection closed (1012)", retry_in=0.5, restarting=True)
    refused = "connection refused: nothing listens at fleet.lan:8700"
    for attempt in range(1, 6):  # 5 attempts 10 s apart: the 4th is past the grace
        reporter.attempt_failed(refused, attempt=attempt, retry_in=10.0)
        clock.advance(10)
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels[0] == (
        logging.INFO,
        f"worker w1: coordinator restarting; reconnecting to {URL} in 0.5s",
    )
    assert [level for level, _ in levels[1:]] == [
        logging.INFO,
        logging.INFO,
        logging.INFO,
        logging.WARNING,  # 30 s: said at once, not held back by the summarising
    ]  # the 5th, the same refusal 10 s later, is summarised (DEBUG)
    caplog.clear()
    reporter.connected(failed_attempts=5)  # after the grace: a warning, as any outage
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_a_quick_restart_is_info_from_the_close_to_the_reconnection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=REPORT_LOGGER)
    clock = FakeClock()
    reporter = ConnectionReporter("w1", URL, clock.now, first_attempts=1)
    reporter.restart_announced()  # a 1012 before the welcome
    for attempt in range(1, 6):
        reporter.attempt_failed(f"refused {attempt}", attempt=attempt, retry_in=1.0)
        clock.advance(1)
    reporter.connected(failed_attempts=5)
    assert {r.levelno for r in caplog.records} == {logging.INFO}
    assert caplog.records[-1].getMessage() == f"worker w1: connected to {URL}"
    # A later, ordinary loss is a warning again.
    caplog.clear()
    reporter.session_ended("the connection closed", retry_in=0.5)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


async def test_the_agent_logs_a_1012_close_at_info_and_reconnects(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger=REPORT_LOGGER)
    sessions = 0
    second = asyncio.Event()

    async def coordinator(socket: ServerConnection) -> None:
        nonlocal sessions
        await socket.recv()
        sessions += 1
        welcome = Welcome(
            protocol_version=PROTOCOL_VERSION,
            worker_id="w1",
            heartbeat_interval_seconds=30,
            heartbeat_timeout_seconds=60,
        )
        await socket.send(encode(welcome))
        if sessions == 1:
            await socket.close(code=1012, reason="service restart")  # what uvicorn sends
            return
        second.set()
        await socket.wait_closed()

    async with serve(coordinator, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with running(f"http://127.0.0.1:{port}", tmp_path) as agent:
            await asyncio.wait_for(second.wait(), 10)
            await asyncio.wait_for(agent.connected.wait(), 10)
    url = f"ws://127.0.0.1:{port}/api/v1/workers/connect"
    mine = [r for r in caplog.records if r.name == REPORT_LOGGER]
    restart = [r for r in mine if "coordinator restarting" in r.getMessage()]
    assert len(restart) == 1
    assert restart[0].levelno == logging.INFO
    assert (
        restart[0]
        .getMessage()
        .startswith(f"worker w1: coordinator restarting; reconnecting to {url} in ")
    )
    assert [r.getMessage() for r in mine if r.levelno >= logging.WARNING] == []
