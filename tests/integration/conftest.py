"""Fixtures for integration tests: a real fleet on loopback, always cleaned up.

The ``fleet`` fixture yields an :class:`it_fleet.Fleet` (nothing started yet;
its workers join by the ``transport`` fixture's transport)
and kills every process it started when the test ends, pass or fail. When a
test fails, the tails of the coordinator's and workers' logs of every fleet it
used (a ``LocalFleet`` argument, or an argument with a ``fleet`` attribute)
are attached to its report as a "fleet logs" section.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from it_fleet import Fleet

from testfleet.local_fleet import LocalFleet
from testfleet.worker.transports import Transport


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        fleet = value if isinstance(value, LocalFleet) else getattr(value, "fleet", None)
        if isinstance(fleet, LocalFleet):
            report.sections.append(("fleet logs", fleet.log_report()))


@pytest.fixture
def transport() -> Transport:
    """How the ``fleet`` fixture's workers join: the WebSocket, unless a test runs on
    both transports with ``@pytest.mark.parametrize("transport", list(Transport))``
    (issue 16: the worker-channel tests hold on gRPC too)."""
    return Transport.WEBSOCKET


@pytest.fixture
def fleet(tmp_path: Path, transport: Transport) -> Iterator[Fleet]:
    running = Fleet(tmp_path, worker_transport=transport)
    try:
        yield running
    finally:
        running.close()
