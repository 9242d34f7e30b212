"""A fleet run across a coordinator failover (issue 13): the run's real
:class:`FleetClient` is given two addresses, both fronting one fake fleet (two
coordinators on one store); mid-run the first becomes a standby naming the
second, or an election leaves no leader for a while. The run must follow, keep
its place (the ``after_seq`` it polls with) and report every test once. No
sockets: ``httpx.MockTransport``; no sleeping: the run's and the client's
pauses advance a fake clock.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from test_fleetrun_run import FakeFleet, collected

from testfleet.client import FleetClient
from testfleet.domain.pytest_tasks import ProjectSource, TestRecord
from testfleet.fleetrun.run import FleetRun
from testfleet.fleetrun.run_types import RunSettings
from testfleet.testing import FakeClock

A, B = "http://a.test:8700", "http://b.test:8700"


def not_leader(leader: str | None) -> httpx.Response:
    return httpx.Response(
        503,
        headers={"X-Testfleet-Leader": leader} if leader else {},
        json={
            "error": {
                "code": "not_leader",
                "message": "this coordinator is a standby",
                "details": [{"leader": leader, "epoch": 2}],
            }
        },
    )


class TwoCoordinators:
    """The REST routes a run uses, served from one :class:`FakeFleet` by whichever
    address :attr:`leader` names; the other answers as a standby."""

    def __init__(self, fleet: FakeFleet) -> None:
        self.fleet = fleet
        self.leader: str | None = A
        self.served: list[str] = []
        #: Called before each request (a test changes the leader there).
        self.before = lambda: None
        #: Every ``after_seq`` the run polled with, in order.
        self.after_seqs: list[int] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.before()
        origin = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        if origin != self.leader:
            return not_leader(self.leader)
        self.served.append(origin)
        path = request.url.path.removeprefix("/api/v1")
        fleet = self.fleet
        answer: Any
        if path == "/workers":
            answer = {"workers": fleet.workers()}
        elif path == "/tests/durations":
            answer = {"durations": fleet.test_durations(request.url.params["project"])}
        elif path == "/tasks" and request.method == "POST":
            answer = {"task_ids": fleet.submit(json.loads(request.content))}
        elif path == "/tasks/cancel":
            answer = fleet.cancel_many(json.loads(request.content)["task_ids"])
        elif path.startswith("/test-runs/"):
            after = int(request.url.params["after_seq"])
            self.after_seqs.append(after)
            answer = fleet.test_run(path.rsplit("/", 1)[1], after_seq=after)
        else:
            raise AssertionError(f"unexpected {request.method} {path}")
        return httpx.Response(200, json=answer)


def run_through(coordinators: TwoCoordinators, count: int) -> list[TestRecord]:
    clock = FakeClock()
    reported: list[TestRecord] = []
    client = FleetClient(
        f"{A},{B}", transport=httpx.MockTransport(coordinators.handle), sleep=clock.advance
    )
    with client:
        FleetRun(
            client,
            RunSettings(run_id="run1", project=ProjectSource(path="/srv/project"), args=["t"]),
            report=lambda record, _worker: reported.append(record),
            clock=clock.now,
            sleep=clock.advance,
            reached=True,
        ).run(collected(count))
    return reported


def test_a_run_follows_the_new_leader_mid_run_and_keeps_its_place() -> None:
    fleet = FakeFleet(["w1"])
    fleet.hold = True  # chunks run until the failover, then finish
    coordinators = TwoCoordinators(fleet)

    def fail_over() -> None:
        if fleet.polls == 3 and coordinators.leader == A:
            coordinators.leader = B
            fleet.hold = False

    coordinators.before = fail_over
    reported = run_through(coordinators, 6)
    assert sorted(r.nodeid for r in reported) == sorted(f"t.py::test_{i}" for i in range(6))
    assert coordinators.served[0] == A
    assert coordinators.served[-1] == B
    assert coordinators.after_seqs == sorted(coordinators.after_seqs)  # never started over


def test_a_run_waits_out_an_election_with_no_leader() -> None:
    fleet = FakeFleet(["w1"])
    fleet.hold = True
    coordinators = TwoCoordinators(fleet)
    electing = {"requests": 0}

    def elect() -> None:
        if fleet.polls >= 2 and coordinators.leader == A:
            coordinators.leader = None  # A is gone; nobody leads yet
        if coordinators.leader is None:
            electing["requests"] += 1
            if electing["requests"] > 20:  # several client rounds and run polls later
                coordinators.leader = B
                fleet.hold = False

    coordinators.before = elect
    reported = run_through(coordinators, 4)
    assert len(reported) == 4
    assert electing["requests"] > 20
    assert coordinators.served[-1] == B
