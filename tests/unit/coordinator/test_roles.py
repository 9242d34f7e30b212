"""Role switching in one process: standby, leader, standby again (``roles.RoleSwitch``).

The lease is ``test_leadership``'s fake, the clock a fake one; the leader's app
is a small stand-in with a lifespan and a ``loop`` whose failure the test sets
(as ``StoreFenced`` would), so every switch is observed without a database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from test_leadership import FakeLease, leadership

from testfleet.coordinator.leadership import CoordinatorRole, LeaseRow
from testfleet.coordinator.roles import RoleSwitch
from testfleet.coordinator.settings import CoordinatorSettings
from testfleet.testing import FakeClock


class FakeLoop:
    def __init__(self) -> None:
        self.failure: BaseException | None = None
        self.shutting_down = False

    def begin_shutdown(self) -> None:
        self.shutting_down = True


class Leaders:
    """Builds stand-in leader apps and records their lifespans."""

    def __init__(self) -> None:
        self.built: list[int] = []
        self.running: list[int] = []
        self.loops: list[FakeLoop] = []

    def __call__(self, epoch: int) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            self.running.append(epoch)
            try:
                yield
            finally:
                self.running.remove(epoch)

        app = FastAPI(lifespan=lifespan)
        app.state.loop = FakeLoop()
        self.loops.append(app.state.loop)
        self.built.append(epoch)

        @app.get("/api/v1/health")
        async def health() -> dict[str, Any]:
            return {"status": "ok", "epoch": epoch}

        return app


async def get(switch: RoleSwitch, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=switch)
    async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
        return await client.get(path)


async def wait_for(clock: FakeClock, condition: Any) -> None:
    for _ in range(10_000):
        if condition():
            return
        await clock.sleep(0.1)
    raise AssertionError("condition never held")


async def test_standby_then_leader_then_standby_again_after_a_fenced_commit() -> None:
    clock = FakeClock()
    lease = FakeLease(clock, LeaseRow(1, "other", "https://other", 9, None, None), holder="other")
    lease.renewed_at = clock.now()
    leaders = Leaders()
    switch = RoleSwitch(leadership(lease), leaders)
    async with clock.autojump():
        switch.start()
        await wait_for(clock, lambda: switch.leadership.known.url is not None)
        answer = await get(switch, "/api/v1/health")
        assert answer.status_code == 503
        assert answer.json()["leader"] == "https://other"
        # The other leader falls silent: this one takes over at epoch 2.
        await wait_for(clock, lambda: switch.role is CoordinatorRole.LEADER)
        assert leaders.running == [2]
        assert (await get(switch, "/api/v1/health")).json() == {"status": "ok", "epoch": 2}
        # Its commit is fenced: it stands by, its app stopped, the lock released...
        leaders.loops[0].failure = RuntimeError("epoch 2 has ended; epoch 3 leads now")
        lease.holder = "third"
        lease.row = LeaseRow(3, "third", "https://third", 11, None, None)
        lease.renewed_at = clock.now()
        await wait_for(clock, lambda: switch.role is CoordinatorRole.STANDBY)
        assert leaders.running == []
        answer = await get(switch, "/api/v1/tasks")
        assert answer.status_code == 503
        assert answer.headers["X-Testfleet-Leader"] == "https://third"
        # ... and when the third falls silent, this process leads again (epoch 4).
        await wait_for(clock, lambda: switch.role is CoordinatorRole.LEADER)
        assert leaders.built == [2, 4]
        switch.begin_shutdown()
        assert leaders.loops[1].shutting_down
        await switch.stop()
    assert leaders.running == []
    assert lease.holder is None  # released after the leader's lifespan ended


async def test_a_mismatch_found_while_standing_by_stops_the_process() -> None:
    clock = FakeClock()
    theirs = '{"max_lost_attempts":9}'
    lease = FakeLease(clock, LeaseRow(1, "other", "https://other", 9, None, theirs))
    lease.holder = "other"
    lease.renewed_at = clock.now()
    stopped: list[bool] = []
    switch = RoleSwitch(leadership(lease, CoordinatorSettings()), Leaders())
    switch.on_fatal = lambda: stopped.append(True)
    async with clock.autojump():
        switch.start()
        await wait_for(clock, lambda: stopped)
        await switch.stop()
    assert switch.fatal is not None
    assert "max_lost_attempts" in switch.fatal
    assert switch.role is CoordinatorRole.STANDBY
